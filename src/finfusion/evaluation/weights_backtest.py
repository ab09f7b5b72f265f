"""Backtest portfolio weights (the WEIGHTS table's rows) on the lake's bars with costs, and the equal-weight baseline.

The weights decided at bar t trade at its close and earn the next bars' returns (`evaluation.backtest` timing);
between decisions the positions drift; a symbol without a weight at a decision is not held. Returns are each
symbol's adjusted-close returns bar to bar on the universe's timeline (a missing bar's move lands on the next bar).
The backtest runs from the first decision to one decision spacing after the last, so time before the first decision
does not dilute the ratios. Costs (`evaluation.costs`): half-spread, commission and slippage per unit traded, and
square-root impact against the trailing 20-bar average traded value (when the bars have volume).

The `evaluation` part of a portfolio experiment: periods_per_year, initial_capital, cash_rate and `costs`
(`CostModel` fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from finfusion.data.calendar import from_us, to_us
from finfusion.errors import FinfusionError
from finfusion.evaluation.backtest import BacktestConfig, kpis, run_backtest
from finfusion.evaluation.costs import CostModel, trailing_adv
from finfusion.samples.portfolio import on_timeline, timeline_rows, universe_panel
from finfusion.samples.windows import LOG_RETURN


@dataclass
class PortfolioEvaluation:
    """Backtest of one set of weights.

    `kpis`: `evaluation.backtest.kpis` (sharpe after costs, total_return, max_drawdown, annual_turnover, ... and the
    buy-and-hold equal-weight benchmark's, prefixed `benchmark_`) plus `pnl` (cumulative profit, currency).
    `equity` [ts, strategy, benchmark] as multiples of the initial capital; `weights` [ts, symbol, weight] the decided
    target weights; `returns` [T] the strategy's per-bar returns after costs.
    """

    kpis: dict[str, float]
    equity: pl.DataFrame
    weights: pl.DataFrame
    returns: np.ndarray

    @property
    def sharpe(self) -> float:
        return self.kpis["sharpe"]


def backtest_config(evaluation: Mapping[str, Any]) -> BacktestConfig:
    """The `BacktestConfig` of an experiment's `evaluation` part (defaults: 252 periods, default costs)."""
    costs = CostModel(**dict(evaluation.get("costs", {})))
    return BacktestConfig(
        initial_capital=float(evaluation.get("initial_capital", 1_000_000.0)),
        cash_rate=float(evaluation.get("cash_rate", 0.0)),
        periods_per_year=int(evaluation.get("periods_per_year", 252)),
        costs=costs,
    )


def evaluate_weights(weights: pl.DataFrame, bars: pl.DataFrame, evaluation: Mapping[str, Any]) -> PortfolioEvaluation:
    """Backtest `weights` [ts, symbol, weight] (each ts a bar of `bars` [symbol, ts, close, volume, ...]) with costs."""
    missing = {"ts", "symbol", "weight"} - set(weights.columns)
    if missing or weights.height == 0:
        raise FinfusionError(f"weights need rows with ts, symbol and weight (missing {sorted(missing)})")
    symbols = sorted(weights["symbol"].unique().to_list())
    traded = [c for c in ("close", "volume") if c in bars.columns]
    panel = universe_panel(bars, bars.select("symbol", "ts", *traded), symbols)
    ts, rows = timeline_rows(panel)
    grid = on_timeline(len(ts), rows, panel.values, np.nan)  # [A, T, K]
    returns = np.expm1(grid[..., panel.columns.index(LOG_RETURN)]).T  # [T, A]
    close = grid[..., panel.columns.index("close")].T
    decided = np.searchsorted(ts, to_us(weights["ts"]))
    if (decided >= len(ts)).any() or (ts[np.minimum(decided, len(ts) - 1)] != to_us(weights["ts"])).any():
        raise FinfusionError("a weight's ts is not a bar of the universe")
    targets = np.full(returns.shape, np.nan)
    targets[decided, np.searchsorted(symbols, weights["symbol"].to_numpy())] = weights["weight"].to_numpy()
    rows_decided = np.unique(decided)
    spacing = int(np.diff(rows_decided).min()) if len(rows_decided) > 1 else 1
    span = slice(int(rows_decided[0]), min(int(rows_decided[-1]) + spacing + 1, len(ts)))
    config = backtest_config(evaluation)
    adv = trailing_adv(close, grid[..., panel.columns.index("volume")].T)[span] if "volume" in traded else None
    result = run_backtest(targets[span], returns=returns[span], prices=close[span], config=config, adv=adv)
    metrics = kpis(result, config.periods_per_year)
    metrics["pnl"] = float(result.equity[-1] - config.initial_capital)
    assert result.benchmark is not None
    equity = pl.DataFrame(
        {
            "ts": from_us(ts[span], "ts"),
            "strategy": result.equity / config.initial_capital,
            "benchmark": result.benchmark.equity / config.initial_capital,
        }
    )
    return PortfolioEvaluation(metrics, equity, weights.select("ts", "symbol", "weight"), result.returns)


def equal_weights(ts: pl.Series, symbols: Sequence[str]) -> pl.DataFrame:
    """Weights [ts, symbol, weight] of the equal-weight long portfolio (1 / A each) at every instant of `ts`."""
    grid = pl.DataFrame({"ts": ts.unique().sort()}).join(pl.DataFrame({"symbol": list(symbols)}), how="cross")
    return grid.with_columns(weight=pl.lit(1.0 / len(symbols)))
