"""`finfusion backtest`: target weights or scores from a file + bars from the lake -> equity, weights and KPIs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import polars as pl
import typer
from rich.table import Table

from finfusion.commands.common import LakeOption, busy, out, reports_errors
from finfusion.data.atomic import atomic_path, write_json_atomic
from finfusion.data.lake import Lake
from finfusion.data.schema import UTC_TS
from finfusion.errors import DataValidationError, FinfusionError
from finfusion.evaluation.backtest import BacktestConfig, BacktestResult, kpis, returns_from_prices, run_backtest
from finfusion.evaluation.costs import NO_COSTS, CostModel, trailing_adv
from finfusion.evaluation.run_layout import EQUITY_FILE, check_equity, write_weights
from finfusion.evaluation.sizing import top_k_weights, vol_target_weights

KPI_ROWS = (
    "total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
    "max_drawdown_duration", "annual_turnover", "hit_rate", "total_costs",
)  # fmt: skip


class Weighting(StrEnum):
    equal = "equal"
    score = "score"


@dataclass
class Market:
    """Bars of the signal file's symbols on the bar timestamps: ts [T], symbols [A], adjusted close, close, volume."""

    ts: pl.Series
    symbols: list[str]
    adj_close: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def _read_signals(path: Path) -> tuple[pl.DataFrame, str]:
    """The file's rows as (ts, symbol, value) and which column gave the value ('weight' or 'score')."""
    if not path.is_file():
        raise FinfusionError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(path, try_parse_dates=True)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"cannot read the file: {exc}", file=path) from exc
    value = next((c for c in ("weight", "score") if c in frame.columns), None)
    missing = [c for c in ("ts", "symbol") if c not in frame.columns]
    if missing or value is None:
        need = ", ".join([*missing, *(["weight or score"] if value is None else [])])
        raise DataValidationError(f"missing column(s): {need} (expected ts, symbol and weight or score)", file=path)
    dtype = frame.schema["ts"]
    if not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
        raise DataValidationError(f"ts must be dates or timestamps, got {dtype}", file=path, field="ts")
    try:
        frame = frame.select(pl.col("ts"), pl.col("symbol").cast(pl.String), pl.col(value).cast(pl.Float64))
    except pl.exceptions.PolarsError as exc:
        raise DataValidationError(f"'{value}' must be numeric", file=path, field=value) from exc
    if frame["ts"].null_count() or frame["symbol"].null_count():
        raise DataValidationError("ts and symbol must not be empty", file=path)
    duplicated = frame.select("ts", "symbol").is_duplicated()
    if duplicated.any():
        first = frame.filter(duplicated).row(0)
        raise DataValidationError(f"(ts, symbol) appears more than once, e.g. {first[0]} {first[1]}", file=path)
    return frame, value


def _align(signals: pl.DataFrame, bars: pl.DataFrame, timezone: str, path: Path) -> pl.DataFrame:
    """Signals keyed by the bar timestamp they belong to: a date matches the last bar of that session date (in the
    dataset's time zone), a timestamp matches a bar closing at that instant (naive timestamps are UTC)."""
    if signals.schema["ts"] == pl.Date:
        session = pl.col("ts").dt.convert_time_zone(timezone).dt.date().alias("date")
        keys = bars.group_by(session).agg(pl.col("ts").max().alias("bar_ts")).rename({"date": "ts"})
    else:
        ts = pl.col("ts")
        utc = (
            ts.dt.replace_time_zone("UTC") if signals.schema["ts"].time_zone is None else ts.dt.convert_time_zone("UTC")
        )
        signals = signals.with_columns(utc.cast(UTC_TS))
        keys = bars.select(pl.col("ts").alias("bar_ts"), pl.col("ts")).unique()
    keyed = signals.join(keys, on="ts", how="left")
    unmatched = keyed.filter(pl.col("bar_ts").is_null())
    if unmatched.height:
        raise DataValidationError(
            f"{unmatched.height} row(s) have a ts with no bar in the dataset (first: {unmatched['ts'][0]})",
            file=path, field="ts",
        )  # fmt: skip
    return keyed.drop("ts").rename({"bar_ts": "ts"})


def _market(store: Lake, dataset: str, freq: str, symbols: list[str]) -> tuple[Market, pl.DataFrame]:
    bars = store.read("bars", dataset, freq=freq).filter(pl.col("symbol").is_in(symbols))
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

    market = Market(ts, symbols, wide("adj_close_"), wide("close"), wide("volume"))
    return market, bars.select("ts").unique()


def _targets(
    keyed: pl.DataFrame, value: str, market: Market, *, top_k: int | None, weighting: Weighting, long_only: bool
) -> np.ndarray:
    """[T, A] targets: the file's weights, or top-k weights of its scores; NaN rows where the file has no row."""
    row = {t: i for i, t in enumerate(market.ts.to_list())}
    col = {s: i for i, s in enumerate(market.symbols)}
    grid = np.full(market.adj_close.shape, np.nan)
    rows = np.array([row[t] for t in keyed["ts"].to_list()], dtype=np.int64)
    cols = np.array([col[s] for s in keyed["symbol"].to_list()], dtype=np.int64)
    grid[rows, cols] = keyed[value].to_numpy()
    if value == "score":
        k = top_k or max(1, len(market.symbols) // 10)
        grid = top_k_weights(np.where(np.isfinite(market.adj_close), grid, np.nan), k, weighting=weighting.value,
                             long_only=long_only)  # fmt: skip
    decided = np.isfinite(grid).any(axis=1)
    grid = np.where(decided[:, None] & ~np.isfinite(market.adj_close), 0.0, grid)
    return grid


def _write(run: Path, market: Market, result: BacktestResult, metrics: dict[str, float]) -> Path:
    """RUN/backtest/: equity.parquet (the run-folder contract's ts, strategy, benchmark, as multiples of the initial
    capital, plus returns, turnover and costs per bar), weights.parquet (held weights, long format), kpis.json/csv."""
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
    clean = {key: (value if math.isfinite(value) else None) for key, value in metrics.items()}
    write_json_atomic(folder / "kpis.json", clean)
    with atomic_path(folder / "kpis.csv") as tmp:
        pl.DataFrame({"metric": list(clean), "value": list(clean.values())}, schema_overrides={"value": pl.Float64})\
            .write_csv(tmp)  # fmt: skip
    return folder


def _print(metrics: dict[str, float], folder: Path) -> None:
    table = Table("KPI", "strategy", "buy & hold", "excess", title="backtest", title_justify="left")
    for key in KPI_ROWS:
        strategy, bench = metrics[key], metrics[f"benchmark_{key}"]
        excess = metrics.get(f"excess_{key}")
        fmt = "{:,.0f}" if key == "max_drawdown_duration" else "{:,.4f}"
        table.add_row(key.replace("_", " "), fmt.format(strategy), fmt.format(bench),
                      "" if excess is None else fmt.format(excess))  # fmt: skip
    table.add_row("information ratio", f"{metrics['information_ratio']:,.4f}", "", "")
    out.print(table)
    out.print(f"wrote {folder}/equity.parquet, weights.parquet, kpis.json, kpis.csv")


@reports_errors
def backtest(
    signals: Annotated[Path, typer.Argument(help="Parquet or CSV with columns ts, symbol and weight or score.")],
    dataset: Annotated[str, typer.Option(help="Bars dataset in the lake (prices: close * adj_factor).")],
    run: Annotated[Path, typer.Option(help="Run folder; results go to RUN/backtest/.")],
    freq: Annotated[str, typer.Option(help="Bar frequency of the dataset.")] = "1d",
    top_k: Annotated[
        int | None, typer.Option(help="Scores: names per side (default: a decile of the universe).")
    ] = None,
    weighting: Annotated[
        Weighting, typer.Option(help="Scores: equal or score-proportional weights.")
    ] = Weighting.equal,
    long_only: Annotated[bool, typer.Option(help="Scores: long the top k only.")] = False,
    vol_target: Annotated[
        float | None, typer.Option(help="Scale to this annual volatility (trailing 20 bars, point-in-time).")
    ] = None,
    rebalance_every: Annotated[int, typer.Option(help="Trade every n-th bar; positions drift in between.")] = 1,
    max_gross: Annotated[float | None, typer.Option(help="Cap on gross exposure sum |w|.")] = None,
    max_net: Annotated[float | None, typer.Option(help="Cap on |net exposure| |sum w|.")] = None,
    cash_rate: Annotated[float, typer.Option(help="Annual rate earned (or paid) on cash.")] = 0.0,
    capital: Annotated[float, typer.Option(help="Initial capital (currency of the prices).")] = 1_000_000.0,
    costs: Annotated[bool, typer.Option(help="Charge transaction costs (on by default).")] = True,
    half_spread_bps: Annotated[float, typer.Option(help="Half bid-ask spread, bps of traded value.")] = 2.0,
    commission_bps: Annotated[float, typer.Option(help="Commission, bps of traded value.")] = 1.0,
    commission_per_share: Annotated[float, typer.Option(help="Commission per share traded.")] = 0.0,
    slippage_bps: Annotated[float, typer.Option(help="Slippage, bps of traded value.")] = 1.0,
    impact_coef: Annotated[
        float, typer.Option(help="Square-root impact: coef * daily vol * sqrt(traded / ADV) per unit traded.")
    ] = 0.1,
    periods_per_year: Annotated[int, typer.Option(help="Bars per year, for annualising.")] = 252,
    lake: LakeOption = None,
) -> None:
    """Backtest target weights (or top-k long/short of scores) on lake prices; print KPIs against buy-and-hold.

    Timing: a weight at ts t is traded at the close of bar t and earns the returns from t to the next bar. Dates match
    the session of that date. Results: RUN/backtest/equity.parquet (strategy and buy-and-hold equity as multiples of
    the initial capital), weights.parquet (held weights), kpis.json, kpis.csv.

    Example: finfusion backtest weights.parquet --dataset synthetic --run runs/exp1
    """
    store = Lake(lake)
    frame, value = _read_signals(signals)
    symbols = sorted(frame["symbol"].unique().to_list())
    with busy(f"backtesting {len(symbols)} symbols on {dataset}"):
        market, bar_ts = _market(store, dataset, freq, symbols)
        timezone = store.metadata("bars", dataset).get("timezone", "UTC")
        keyed = _align(frame, bar_ts, timezone, signals)
        target = _targets(keyed, value, market, top_k=top_k, weighting=weighting, long_only=long_only)
        returns = returns_from_prices(market.adj_close)
        if vol_target is not None:
            target = vol_target_weights(target, returns, vol_target, periods_per_year=periods_per_year)
        try:
            cost_model = CostModel(
                half_spread_bps=half_spread_bps, commission_bps=commission_bps,
                commission_per_share=commission_per_share, slippage_bps=slippage_bps, impact_coef=impact_coef,
            ) if costs else NO_COSTS  # fmt: skip
            config = BacktestConfig(
                initial_capital=capital, rebalance_every=rebalance_every, max_gross=max_gross, max_net=max_net,
                cash_rate=cash_rate, periods_per_year=periods_per_year, costs=cost_model,
            )  # fmt: skip
            adv = trailing_adv(market.close, market.volume)
            result = run_backtest(target, returns=returns, prices=market.close, config=config, adv=adv)
        except ValueError as exc:
            raise FinfusionError(f"invalid backtest settings: {exc}") from exc
        metrics = kpis(result, periods_per_year)
        folder = _write(run, market, result, metrics)
    _print(metrics, folder)
