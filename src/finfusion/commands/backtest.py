"""`finfusion backtest`: target weights or scores from a file + bars from the lake -> equity, weights and KPIs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from finfusion.commands.common import LakeOption, busy, out, reports_errors
from finfusion.errors import FinfusionError

KPI_ROWS = (
    "total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
    "max_drawdown_duration", "annual_turnover", "hit_rate", "total_costs",
)  # fmt: skip


class Weighting(StrEnum):
    equal = "equal"
    score = "score"


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
    from finfusion.data.lake import Lake
    from finfusion.evaluation.backtest import BacktestConfig
    from finfusion.evaluation.costs import NO_COSTS, CostModel
    from finfusion.evaluation.signal_backtest import backtest_signals, write_backtest
    from finfusion.evaluation.signals import ScoreSizing, read_signals

    store = Lake(lake)
    rows = read_signals(signals)
    sizing = ScoreSizing(top_k=top_k, weighting=weighting.value, long_only=long_only)
    with busy(f"backtesting {len(rows.symbols)} symbols on {dataset}"):
        try:
            cost_model = CostModel(
                half_spread_bps=half_spread_bps, commission_bps=commission_bps,
                commission_per_share=commission_per_share, slippage_bps=slippage_bps, impact_coef=impact_coef,
            ) if costs else NO_COSTS  # fmt: skip
            config = BacktestConfig(
                initial_capital=capital, rebalance_every=rebalance_every, max_gross=max_gross, max_net=max_net,
                cash_rate=cash_rate, periods_per_year=periods_per_year, costs=cost_model,
            )  # fmt: skip
            backtest = backtest_signals(store, rows, dataset, freq, config, sizing=sizing, vol_target=vol_target)
        except ValueError as exc:
            raise FinfusionError(f"invalid backtest settings: {exc}") from exc
        folder = write_backtest(run, backtest)
    _print(backtest.metrics, folder)
