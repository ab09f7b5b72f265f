"""Plotly figures of a portfolio backtest: equity, rolling Sharpe and weights heat-map (the builders of
`evaluation.plots`, fed from a `PortfolioEvaluation`), and the equity curves of several strategies on one chart."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
import polars as pl

from finfusion.evaluation.plots import (
    BENCHMARK_COLOUR,
    MODEL_COLOURS,
    equity_figure,
    layout,
    rolling_sharpe_figure,
    weights_heatmap,
    x,
)
from finfusion.evaluation.weights_backtest import PortfolioEvaluation


def portfolio_figures(
    evaluation: PortfolioEvaluation, window: int = 63, periods_per_year: float = 252.0
) -> dict[str, go.Figure]:
    """`equity` (strategy vs buy-and-hold equal weight), `rolling_sharpe` (trailing `window` bars, annualised) and
    `weights` (the decided weights per symbol over time)."""
    return {
        "equity": equity_figure(evaluation.equity),
        "rolling_sharpe": rolling_sharpe_figure(evaluation.equity, window, periods_per_year),
        "weights": weights_heatmap(evaluation.weights),
    }


def comparison_figure(evaluations: Mapping[str, PortfolioEvaluation]) -> go.Figure:
    """Equity (multiples of the initial capital) of each named strategy, with its Sharpe after costs in the legend."""
    fig = go.Figure()
    for index, (name, evaluation) in enumerate(evaluations.items()):
        equity: pl.DataFrame = evaluation.equity
        fig.add_scatter(
            x=x(equity["ts"]),
            y=equity["strategy"].to_numpy(),
            name=f"{name} (Sharpe {evaluation.sharpe:.2f})",
            line={"color": MODEL_COLOURS[index % len(MODEL_COLOURS)]},
        )
    fig.add_hline(y=1.0, line={"color": BENCHMARK_COLOUR, "width": 1})
    return layout(fig, "Equity after costs", 420, "equity (x initial capital)")
