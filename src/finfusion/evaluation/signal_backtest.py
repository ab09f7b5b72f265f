"""Backtest a signal file (`evaluation/signals.py`) on the bars of a lake dataset and write the run folder's backtest.

Prices are the split-adjusted closes (close * adj_factor); costs use the raw close and the trailing average daily
volume. Results go to RUN/backtest/ in the run-folder contract (`evaluation/run_layout.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from finfusion.data.atomic import atomic_path, write_json_atomic
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.evaluation.backtest import BacktestConfig, BacktestResult, kpis, returns_from_prices, run_backtest
from finfusion.evaluation.costs import trailing_adv
from finfusion.evaluation.run_layout import EQUITY_FILE, check_equity, write_weights
from finfusion.evaluation.signals import ScoreSizing, Signals, align_signals, target_weights
from finfusion.evaluation.sizing import vol_target_weights


@dataclass
class Market:
    """Bars of the signal file's symbols on the bar timestamps: ts [T], symbols [A], adjusted close, close, volume
    [T, A] (NaN where a symbol has no bar)."""

    ts: pl.Series
    symbols: list[str]
    adj_close: np.ndarray
    close: np.ndarray
    volume: np.ndarray


@dataclass
class SignalBacktest:
    """A backtest of a signal file: its market, the simulation and the KPIs (`evaluation.backtest.kpis`)."""

    market: Market
    result: BacktestResult
    metrics: dict[str, float]


def read_market(lake: Lake, dataset: str, freq: str, symbols: list[str]) -> Market:
    """The `freq` bars of `symbols` in `dataset` as a Market; raises FinfusionError on a symbol without bars."""
    bars = lake.read("bars", dataset, freq=freq).filter(pl.col("symbol").is_in(symbols))
    unknown = sorted(set(symbols) - set(bars["symbol"].unique().to_list()))
    if unknown:
        raise FinfusionError(f"symbol(s) not in bars dataset '{dataset}' at {freq}: {', '.join(unknown[:10])}")
    bars = bars.with_columns(
        (pl.col("close") * pl.col("adj_factor").fill_null(1.0)).alias("adj_close_"),
        pl.col("volume").cast(pl.Float64),
    )
    ts = bars["ts"].unique().sort()

    def wide(column: str) -> np.ndarray:
        table = bars.pivot(on="symbol", index="ts", values=column).sort("ts")
        table = pl.DataFrame({"ts": ts}).join(table, on="ts", how="left")
        return table.select([pl.col(s) if s in table.columns else pl.lit(None, pl.Float64).alias(s) for s in symbols])\
            .to_numpy().astype(np.float64)  # fmt: skip

    return Market(ts, symbols, wide("adj_close_"), wide("close"), wide("volume"))


def backtest_signals(
    lake: Lake,
    signals: Signals,
    dataset: str,
    freq: str,
    config: BacktestConfig,
    *,
    sizing: ScoreSizing,
    vol_target: float | None = None,
) -> SignalBacktest:
    """Trade the signals' target weights (or top-k weights of their scores, per `sizing`) on the dataset's bars.

    With `vol_target`, targets are scaled to that annual volatility (trailing 20 bars, point-in-time). Raises
    FinfusionError on a symbol or a signal instant without bars, ValueError on invalid settings.
    """
    market = read_market(lake, dataset, freq, signals.symbols)
    timezone = lake.metadata("bars", dataset).get("timezone", "UTC")
    keyed = align_signals(signals, pl.DataFrame({"ts": market.ts}), timezone)
    target = target_weights(keyed, signals.kind, market.ts.to_list(), market.symbols, market.adj_close, sizing)
    returns = returns_from_prices(market.adj_close)
    if vol_target is not None:
        target = vol_target_weights(target, returns, vol_target, periods_per_year=config.periods_per_year)
    adv = trailing_adv(market.close, market.volume)
    result = run_backtest(target, returns=returns, prices=market.close, config=config, adv=adv)
    return SignalBacktest(market, result, kpis(result, config.periods_per_year))


def write_backtest(run: Path, backtest: SignalBacktest) -> Path:
    """RUN/backtest/: equity.parquet (the run-folder contract's ts, strategy, benchmark, as multiples of the initial
    capital, plus returns, turnover and costs per bar), weights.parquet (held weights, long format), kpis.json/csv.
    Returns the folder."""
    market, result = backtest.market, backtest.result
    assert result.benchmark is not None
    capital = result.config.initial_capital
    equity = pl.DataFrame({
        "ts": market.ts, "strategy": result.equity / capital, "benchmark": result.benchmark.equity / capital,
        "returns": result.returns, "benchmark_returns": result.benchmark.returns, "turnover": result.turnover,
        "costs": result.costs / capital,
    })  # fmt: skip
    equity_path = run / EQUITY_FILE
    check_equity(equity, equity_path)
    with atomic_path(equity_path) as tmp:
        equity.write_parquet(tmp)
    n_bars, n_assets = result.weights.shape
    write_weights(run, pl.DataFrame({
        "ts": market.ts.gather(np.repeat(np.arange(n_bars), n_assets)),
        "symbol": np.tile(np.array(market.symbols), n_bars), "weight": result.weights.reshape(-1),
    }))  # fmt: skip
    folder = equity_path.parent
    clean = {key: (value if math.isfinite(value) else None) for key, value in backtest.metrics.items()}
    write_json_atomic(folder / "kpis.json", clean)
    with atomic_path(folder / "kpis.csv") as tmp:
        pl.DataFrame({"metric": list(clean), "value": list(clean.values())}, schema_overrides={"value": pl.Float64})\
            .write_csv(tmp)  # fmt: skip
    return folder
