"""Plotly figures of a run: one builder per plot, each taking frames that follow the run folder contract.

Timestamps are drawn in UTC. The calculations behind the calibration plots (`interval_coverage`, `reliability`) and
the trailing statistics (`drawdown`, `rolling_sharpe`) are public so that they can be tested and reused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from finfusion.evaluation.run_layout import quantile_columns

STRATEGY_COLOUR = "#1f5fa8"
BENCHMARK_COLOUR = "#8a8a8a"
ACTUAL_COLOUR = "#222222"
BAND_RGB = "31, 95, 168"
MODEL_COLOURS = ("#1f5fa8", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#8a8a8a")
TEMPLATE = "plotly_white"


def x(series: pl.Series) -> np.ndarray:
    """UTC datetimes as naive datetime64 (plotly draws them as given)."""
    return series.dt.convert_time_zone("UTC").dt.replace_time_zone(None).to_numpy()


def layout(fig: go.Figure, title: str, height: int, y_title: str, x_title: str = "time (UTC)") -> go.Figure:
    fig.update_layout(
        title=title,
        height=height,
        template=TEMPLATE,
        margin={"l": 60, "r": 20, "t": 50, "b": 90},
        legend={"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom", "x": 0.5, "xanchor": "center"},
        hovermode="x unified" if x_title == "time (UTC)" else "closest",
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def _series(equity: pl.DataFrame) -> list[tuple[str, str]]:
    columns = [("strategy", STRATEGY_COLOUR)]
    if "benchmark" in equity.columns and equity["benchmark"].null_count() < equity.height:
        columns.append(("benchmark", BENCHMARK_COLOUR))
    return columns


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Fall from the running peak, as a fraction (0 at a new high, -0.25 a quarter below the peak)."""
    return equity / np.fmax.accumulate(equity) - 1.0


def rolling_sharpe(equity: np.ndarray, window: int, periods_per_year: float) -> np.ndarray:
    """Annualised Sharpe of the `window` simple returns ending at each point (trailing, so point-in-time).

    NaN until `window` returns exist, where the returns do not vary, and after equity falls to zero or below.
    """
    previous = equity[:-1]
    step = np.divide(equity[1:], previous, out=np.full_like(previous, np.nan), where=previous > 0) - 1.0
    returns = pl.Series(np.concatenate([[np.nan], step])).fill_nan(None)
    mean = returns.rolling_mean(window, min_samples=window).to_numpy()
    std = returns.rolling_std(window, min_samples=window).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(std > 0, mean / std * np.sqrt(periods_per_year), np.nan)
    return sharpe.astype(float)


def equity_figure(equity: pl.DataFrame) -> go.Figure:
    """Strategy equity against the benchmark."""
    fig = go.Figure()
    for name, colour in _series(equity):
        fig.add_scatter(x=x(equity["ts"]), y=equity[name].to_numpy(), name=name, line={"color": colour})
    return layout(fig, "Equity: strategy vs benchmark", 420, "equity")


def drawdown_figure(equity: pl.DataFrame) -> go.Figure:
    """Drawdown from the running peak of the strategy and of the benchmark."""
    fig = go.Figure()
    for name, colour in _series(equity):
        values = equity[name].to_numpy().astype(float)
        fig.add_scatter(
            x=x(equity["ts"]),
            y=drawdown(values),
            name=name,
            line={"color": colour},
            fill="tozeroy" if name == "strategy" else None,
        )
    fig = layout(fig, "Drawdown from the running peak", 320, "drawdown")
    fig.update_yaxes(tickformat=".0%")
    return fig


def rolling_sharpe_figure(equity: pl.DataFrame, window: int = 63, periods_per_year: float = 252.0) -> go.Figure:
    """Trailing `window`-period Sharpe ratio, annualised with `periods_per_year`."""
    fig = go.Figure()
    for name, colour in _series(equity):
        values = equity[name].to_numpy().astype(float)
        sharpe = rolling_sharpe(values, window, periods_per_year)
        fig.add_scatter(x=x(equity["ts"]), y=sharpe, name=name, line={"color": colour})
    fig.add_hline(y=0.0, line={"color": "#bbbbbb", "width": 1})
    title = f"Rolling Sharpe: trailing {window} periods, annualised ({periods_per_year:g} periods a year)"
    return layout(fig, title, 320, "Sharpe")


def weights_heatmap(weights: pl.DataFrame) -> go.Figure:
    """Weight per symbol (rows) over time (columns); blue long, red short, white flat or not held."""
    wide = weights.pivot(on="symbol", index="ts", values="weight").sort("ts").fill_null(0.0)
    symbols = sorted(c for c in wide.columns if c != "ts")
    z = wide.select(symbols).to_numpy().T
    limit = float(np.nanmax(np.abs(z))) or 1.0
    fig = go.Figure(
        go.Heatmap(
            x=x(wide["ts"]),
            y=symbols,
            z=z,
            colorscale="RdBu",
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": {"text": "weight"}},
            hovertemplate="%{x}<br>%{y}: %{z:.3f}<extra></extra>",
        )
    )
    return layout(fig, "Portfolio weights", max(320, 26 * len(symbols) + 140), "symbol")


def _central_intervals(levels: Sequence[float]) -> list[tuple[float, float]]:
    """Symmetric quantile pairs (lo, 1 - lo), widest first."""
    by_rounded = {round(level, 9): level for level in levels}
    lows = [lo for lo in sorted(levels) if lo < 0.5 and round(1.0 - lo, 9) in by_rounded]
    return [(lo, by_rounded[round(1.0 - lo, 9)]) for lo in lows]


def _pick_origins(origins: pl.Series, count: int) -> list[object]:
    """Up to `count` evenly spaced values of a sorted series, first and last included."""
    if len(origins) <= count:
        return origins.to_list()
    return origins.gather(np.unique(np.linspace(0, len(origins) - 1, count).round().astype(int))).to_list()


def _primary(forecasts: pl.DataFrame, model: str | None) -> pl.DataFrame:
    if "model" not in forecasts.columns:
        return forecasts
    chosen = model if model is not None else forecasts["model"][0]
    return forecasts.filter(pl.col("model") == chosen)


def _fan(fig: go.Figure, rows: pl.DataFrame, quantiles: dict[float, str], row: int, legend: bool) -> None:
    """Nested interval bands and the median (or mean) of one forecast path, starting from `base` when known."""
    rows = rows.sort("target_ts")
    xs = x(rows["target_ts"])
    anchor = np.empty(0)
    if "base" in rows.columns:
        xs = np.concatenate([x(rows["ts"].head(1)), xs])
        anchor = rows["base"].head(1).to_numpy().astype(float)
    pairs = _central_intervals(list(quantiles))
    for rank, (lo, hi) in enumerate(pairs):
        upper = np.concatenate([anchor, rows[quantiles[hi]].to_numpy()])
        lower = np.concatenate([anchor, rows[quantiles[lo]].to_numpy()])
        fig.add_scatter(
            x=np.concatenate([xs, xs[::-1]]),
            y=np.concatenate([upper, lower[::-1]]),
            fill="toself",
            fillcolor=f"rgba({BAND_RGB}, {0.12 + 0.5 * (rank + 1) / (len(pairs) + 1):.2f})",
            line={"width": 0},
            hoverinfo="skip",
            name=f"{hi - lo:.0%} interval",
            legendgroup=f"band{rank}",
            showlegend=legend,
            row=row,
            col=1,
        )
    centre = quantiles.get(0.5) or ("mean" if "mean" in rows.columns else None)
    if centre is not None:
        fig.add_scatter(
            x=xs,
            y=np.concatenate([anchor, rows[centre].to_numpy()]),
            mode="lines",
            line={"color": STRATEGY_COLOUR, "dash": "dash"},
            name="median" if centre != "mean" else "mean",
            legendgroup="centre",
            showlegend=legend,
            row=row,
            col=1,
        )


def fan_chart(
    forecasts: pl.DataFrame,
    symbols: Sequence[str] | None = None,
    max_symbols: int = 4,
    max_origins: int = 3,
    model: str | None = None,
) -> go.Figure:
    """Forecast intervals against what happened, one panel per symbol (the first `max_symbols` by default).

    With one horizon step the bands follow the one-step-ahead forecasts over time; with several, up to `max_origins`
    evenly spaced forecast origins each draw their path. With a `model` column, `model` (default: the first) is drawn.
    """
    frame = _primary(forecasts, model)
    chosen = list(symbols) if symbols is not None else sorted(frame["symbol"].unique().to_list())[:max_symbols]
    quantiles = quantile_columns(frame)
    fig = make_subplots(rows=len(chosen), cols=1, subplot_titles=chosen, vertical_spacing=0.32 / max(len(chosen), 1))
    for index, symbol in enumerate(chosen, start=1):
        rows = frame.filter(pl.col("symbol") == symbol)
        if rows["h"].max() == 1:
            paths = [rows.drop("base", strict=False)]
        else:
            origins = _pick_origins(rows["ts"].unique().sort(), max_origins)
            paths = [rows.filter(pl.col("ts") == origin) for origin in origins]
        for number, path in enumerate(paths):
            _fan(fig, path, quantiles, index, legend=index == 1 and number == 0)
        seen = rows.filter(pl.col("actual").is_not_null()).unique("target_ts").sort("target_ts")
        fig.add_scatter(
            x=x(seen["target_ts"]),
            y=seen["actual"].to_numpy(),
            mode="lines+markers",
            marker={"size": 3},
            line={"color": ACTUAL_COLOUR, "width": 1.5},
            name="actual",
            legendgroup="actual",
            showlegend=index == 1,
            row=index,
            col=1,
        )
    title = "Forecasts with intervals vs actual" + (f" ({frame['model'][0]})" if "model" in frame.columns else "")
    fig = layout(fig, title, 90 + 260 * len(chosen), "value")
    fig.update_xaxes(title_text=None)
    fig.update_xaxes(title_text="time (UTC)", row=len(chosen), col=1)
    return fig


def _models(forecasts: pl.DataFrame) -> pl.DataFrame:
    return forecasts if "model" in forecasts.columns else forecasts.with_columns(model=pl.lit("forecast"))


def interval_coverage(forecasts: pl.DataFrame) -> pl.DataFrame:
    """Per model and central interval (q_lo, q_hi = 1 - q_lo): nominal and empirical coverage of the actuals.

    Columns: model, nominal, empirical, n. Rows without an actual are left out.
    """
    quantiles = quantile_columns(forecasts)
    seen = _models(forecasts).filter(pl.col("actual").is_not_null())
    parts = [
        seen.group_by("model", maintain_order=True).agg(
            nominal=pl.lit(hi - lo),
            empirical=pl.col("actual").is_between(pl.col(quantiles[lo]), pl.col(quantiles[hi])).mean(),
            n=pl.len(),
        )
        for lo, hi in _central_intervals(list(quantiles))
    ]
    schema = {"model": pl.String, "nominal": pl.Float64, "empirical": pl.Float64, "n": pl.UInt32}
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).cast(schema).sort("model", "nominal", maintain_order=True)


def up_outcome(forecasts: pl.DataFrame) -> pl.Expr:
    """Whether the target went up: actual > base when `base` is given, else actual > 0 (the target is a return)."""
    return pl.col("actual") > (pl.col("base") if "base" in forecasts.columns else pl.lit(0.0))


def reliability(forecasts: pl.DataFrame, bins: int = 10) -> pl.DataFrame:
    """p_up in `bins` equal-width bins: per model and non-empty bin, the mean forecast and the observed up rate.

    Columns: model, bin, predicted, observed, n. Rows without an actual are left out.
    """
    seen = _models(forecasts).filter(pl.col("actual").is_not_null())
    return (
        seen.with_columns(
            bin=(pl.col("p_up") * bins).floor().clip(0, bins - 1).cast(pl.Int32),
            up=up_outcome(seen).cast(pl.Float64),
        )
        .group_by("model", "bin", maintain_order=True)
        .agg(predicted=pl.col("p_up").mean(), observed=pl.col("up").mean(), n=pl.len())
        .sort("model", "bin", maintain_order=True)
    )


def _diagonal(fig: go.Figure, low: float, high: float) -> None:
    fig.add_scatter(
        x=[low, high], y=[low, high], mode="lines", line={"color": "#bbbbbb", "dash": "dot"}, name="perfect"
    )


def interval_calibration_figure(forecasts: pl.DataFrame) -> go.Figure:
    """Empirical against nominal coverage of the central intervals; on the diagonal is calibrated."""
    coverage = interval_coverage(forecasts)
    fig = go.Figure()
    _diagonal(fig, 0.0, 1.0)
    for index, (model, rows) in enumerate(coverage.group_by("model", maintain_order=True)):
        fig.add_scatter(
            x=rows["nominal"].to_numpy(),
            y=rows["empirical"].to_numpy(),
            customdata=rows["n"].to_numpy(),
            mode="lines+markers",
            name=str(model[0]),
            line={"color": MODEL_COLOURS[index % len(MODEL_COLOURS)]},
            hovertemplate="nominal %{x:.0%}<br>empirical %{y:.1%}<br>n = %{customdata}<extra></extra>",
        )
    fig = layout(fig, "Interval calibration: nominal vs empirical coverage", 420, "empirical coverage", "nominal")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return fig


def reliability_figure(forecasts: pl.DataFrame, bins: int = 10) -> go.Figure:
    """Reliability diagram of p_up: observed up rate against the mean forecast per bin (marker area ~ count)."""
    table = reliability(forecasts, bins)
    fig = go.Figure()
    _diagonal(fig, 0.0, 1.0)
    largest = float(table["n"].max() or 1)
    for index, (model, rows) in enumerate(table.group_by("model", maintain_order=True)):
        counts = rows["n"].to_numpy()
        fig.add_scatter(
            x=rows["predicted"].to_numpy(),
            y=rows["observed"].to_numpy(),
            customdata=counts,
            mode="lines+markers",
            marker={"size": 6 + 18 * np.sqrt(counts / largest)},
            name=str(model[0]),
            line={"color": MODEL_COLOURS[index % len(MODEL_COLOURS)]},
            hovertemplate="forecast %{x:.2f}<br>observed %{y:.2f}<br>n = %{customdata}<extra></extra>",
        )
    fig = layout(fig, f"Up/down reliability ({bins} bins of p_up)", 420, "observed frequency of up", "forecast p_up")
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return fig
