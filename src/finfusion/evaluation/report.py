"""The report of a run: one self-contained HTML page (plotly.js inlined once, no network) plus metrics.json/.csv.

`write_report(run_dir)` reads the run folder (see run_layout and docs/report.md), draws every plot whose inputs
exist, says which inputs are missing, and puts the metric tables with the baselines side by side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs

from finfusion.data.atomic import atomic_path
from finfusion.errors import FinfusionError
from finfusion.evaluation import plots
from finfusion.evaluation.explain_section import explanations_section
from finfusion.evaluation.run_layout import (
    EQUITY_FILE,
    FORECASTS_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    Goal,
    Metrics,
    Run,
    dump_metrics,
    load_run,
    quantile_columns,
)

#: (section id, title); every section but "metrics" holds one figure in <div id="fig-<section id>">.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("metrics", "Metrics"),
    ("equity", "Equity vs benchmark"),
    ("drawdown", "Drawdown"),
    ("rolling-sharpe", "Rolling Sharpe"),
    ("weights", "Weights"),
    ("fan", "Forecasts vs what happened"),
    ("interval-calibration", "Interval calibration"),
    ("reliability", "Up/down reliability"),
)
FIGURE_SECTIONS = tuple(section for section, _ in SECTIONS if section != "metrics")
REPORT_NAME = "report.html"
EXPLANATIONS_PAGE = "explanations.html"

#: Name fragments that decide a metric's goal when metrics.json gives none (checked in this order).
GOAL_HINTS: tuple[tuple[Goal, tuple[str, ...]], ...] = (
    ("min_abs", ("drawdown", "bias")),
    ("min", ("rmse", "mse", "mae", "mape", "smape", "mase", "crps", "msis", "pinball", "nll", "brier", "log_loss")),
    ("min", ("turnover",)),
    ("max", ("sharpe", "sortino", "calmar", "accuracy", "hit_rate", "precision", "recall", "f1", "mcc", "auc", "r2")),
    ("max", ("return", "cagr", "pnl")),
)
GOAL_TEXT: dict[Goal, str] = {"max": "higher is better", "min": "lower is better", "min_abs": "closer to 0 is better"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222;
       background: #f6f7f9; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 0 0 8px; font-size: 20px; }
.meta { color: #555; margin: 0 0 16px; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
section { background: #fff; border: 1px solid #e2e5ea; border-radius: 6px; padding: 16px 20px; margin: 18px 0; }
.note { color: #555; font-size: 14px; margin: 4px 0 10px; }
.missing { background: #fff6e0; border: 1px solid #f0d48a; border-radius: 6px; padding: 10px 16px; }
.absent { color: #8a6d1d; font-style: italic; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0 12px; }
th, td { border-bottom: 1px solid #e2e5ea; padding: 5px 12px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef1f5; }
th.baseline, td.baseline { background: #fafafa; color: #555; }
td.best { background: #dff3e4; font-weight: 700; color: #14532d; }
td.significant { font-weight: 700; }
.tag { display: block; font-size: 11px; font-weight: 400; color: #777; }
.goal { color: #888; font-size: 12px; }
"""


#: The sign strategy's figures: a model whose strategy never trades (turnover 0, e.g. the random walk's zero
#: forecast) keeps them at their idle values (no return, no drawdown) and is never highlighted as best on them.
TURNOVER = "avg_turnover"
STRATEGY_METRICS = frozenset({"sharpe", "annual_return", "max_drawdown", "avg_turnover", "sortino", "calmar"})


def metric_goal(metric: str, overrides: dict[str, Goal]) -> Goal | None:
    """Whether a metric is best at its max, min or smallest absolute value; None when unknown (not highlighted)."""
    if metric in overrides:
        return overrides[metric]
    name = metric.lower()
    for goal, hints in GOAL_HINTS:
        if any(re.search(rf"(^|[^a-z]){hint}", name) for hint in hints):
            return goal
    return None


def best_models(values: dict[str, float], goal: Goal | None) -> set[str]:
    """The models (ties included) with the best finite value of one metric under `goal`."""
    finite = {m: v for m, v in values.items() if math.isfinite(v)}
    if goal is None or not finite:
        return set()
    key: Callable[[float], float] = {"max": lambda v: -v, "min": lambda v: v, "min_abs": abs}[goal]
    best = min(key(v) for v in finite.values())
    return {m for m, v in finite.items() if key(v) == best}


def model_order(metrics: Metrics) -> list[str]:
    """Models first, then baselines, each in the order of metrics.json."""
    return [m for m in metrics.models if m not in metrics.baselines] + list(metrics.baselines)


def metric_names(metrics: Metrics) -> list[str]:
    return list(dict.fromkeys(name for values in metrics.models.values() for name in values))


def metrics_frame(metrics: Metrics) -> pl.DataFrame:
    """The metric table as a frame: one row per metric, one column per model (baselines last); NaN as null."""
    models = model_order(metrics)
    rows = {"metric": metric_names(metrics)}
    for model in models:
        values = [metrics.models[model].get(name, math.nan) for name in rows["metric"]]
        rows[model] = [None if math.isnan(v) else v for v in values]
    return pl.DataFrame(rows, schema={"metric": pl.String, **dict.fromkeys(models, pl.Float64)})


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4g}"


def _cell(text: str, *, baseline: bool, best: bool) -> str:
    classes = " ".join(name for name, on in (("baseline", baseline), ("best", best)) if on)
    return f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>"


def metrics_table_html(metrics: Metrics) -> str:
    """Models as columns (baselines last and marked), one row per metric, the best value per metric highlighted."""
    models = model_order(metrics)
    head = "".join(
        f'<th class="baseline">{escape(m)}<span class="tag">baseline</span></th>'
        if m in metrics.baselines
        else f"<th>{escape(m)}</th>"
        for m in models
    )
    body = []
    idle = {m for m in models if metrics.models[m].get(TURNOVER) == 0.0}  # a strategy that never trades
    for name in metric_names(metrics):
        values = {m: metrics.models[m].get(name, math.nan) for m in models}
        goal = metric_goal(name, metrics.goals)
        ranked = {m: v for m, v in values.items() if m not in idle} if name in STRATEGY_METRICS else values
        best = best_models(ranked, goal)
        cells = "".join(_cell(_number(v), baseline=m in metrics.baselines, best=m in best) for m, v in values.items())
        hint = f' <span class="goal">({GOAL_TEXT[goal]})</span>' if goal else ""
        body.append(f"<tr><td>{escape(name)}{hint}</td>{cells}</tr>")
    return (
        f'<table id="metrics-table"><thead><tr><th>metric</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def significance_table_html(metrics: Metrics) -> str:
    """One row per test; p-values below 0.05 in bold."""
    first = ["model", "baseline", "metric", "test", "statistic", "p_value"]
    columns = [c for c in first if any(c in t for t in metrics.significance)]
    columns += list(dict.fromkeys(k for t in metrics.significance for k in t if k not in first))
    rows = []
    for test in metrics.significance:
        cells = []
        for column in columns:
            value = test.get(column, "")
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            text = escape(_number(float(value)) if numeric else str(value))
            significant = numeric and column == "p_value" and value < 0.05
            cells.append(f'<td class="significant">{text}</td>' if significant else f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    return f'<table id="significance-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _metrics_section(metrics: Metrics | None) -> str:
    if metrics is None:
        return f'<p class="absent">{METRICS_FILE} is missing: no metric table.</p>'
    if not metrics.models:
        return f'<p class="absent">{METRICS_FILE} lists no models.</p>'
    parts = [
        '<p class="note">Models as columns, baselines last; the best value of each metric with a known direction is '
        "highlighted.</p>",
        metrics_table_html(metrics),
    ]
    if metrics.significance:
        parts += ["<h3>Significance tests</h3>", significance_table_html(metrics)]
    else:
        parts.append('<p class="absent">No significance tests in metrics.json.</p>')
    return "".join(parts)


def _equity_figures(run: Run) -> dict[str, go.Figure | str]:
    if run.equity is None:
        return dict.fromkeys(("equity", "drawdown", "rolling-sharpe"), f"{EQUITY_FILE} is missing.")
    window = run.info.rolling_window
    rolling: go.Figure | str = (
        plots.rolling_sharpe_figure(run.equity, window, run.info.periods_per_year)
        if run.equity.height > window
        else f"only {run.equity.height} equity points; a {window}-period rolling window needs {window + 1}."
    )
    return {
        "equity": plots.equity_figure(run.equity),
        "drawdown": plots.drawdown_figure(run.equity),
        "rolling-sharpe": rolling,
    }


def _forecast_figures(forecasts: pl.DataFrame | None) -> dict[str, go.Figure | str]:
    if forecasts is None:
        return dict.fromkeys(("fan", "interval-calibration", "reliability"), f"{FORECASTS_FILE} is missing.")
    fan: go.Figure | str = f"{FORECASTS_FILE} has no quantile columns (q0.1, q0.5, ...)."
    if quantile_columns(forecasts):
        fan = plots.fan_chart(forecasts)
    calibration: go.Figure | str = f"{FORECASTS_FILE} has no central intervals (q0.1/q0.9, ...) with actual values."
    if not plots.interval_coverage(forecasts).is_empty():
        calibration = plots.interval_calibration_figure(forecasts)
    reliability: go.Figure | str = f"{FORECASTS_FILE} has no p_up column."
    if "p_up" in forecasts.columns:
        has_actuals = forecasts["actual"].null_count() < forecasts.height
        reliability = plots.reliability_figure(forecasts) if has_actuals else f"{FORECASTS_FILE} has no actual values."
    return {"fan": fan, "interval-calibration": calibration, "reliability": reliability}


def build_figures(run: Run) -> dict[str, go.Figure | str]:
    """Each figure section's figure, or the reason it cannot be drawn."""
    weights: go.Figure | str = (
        plots.weights_heatmap(run.weights) if run.weights is not None else f"{WEIGHTS_FILE} is missing."
    )
    return {**_equity_figures(run), "weights": weights, **_forecast_figures(run.forecasts)}


def _figure_div(section: str, figure: go.Figure | str) -> str:
    if isinstance(figure, str):
        return f'<p class="absent">Not shown: {escape(figure)}</p>'
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{section}",
        default_height=f"{figure.layout.height}px",
        config={"displaylogo": False, "responsive": True},
    )


def render_html(run: Run, generated: datetime) -> str:
    """The whole page as one string: plotly.js once in <head>, then one section per entry of SECTIONS."""
    figures = build_figures(run)
    titles = dict(SECTIONS)
    body = [f'<section id="metrics"><h2>{titles["metrics"]}</h2>{_metrics_section(run.metrics)}</section>']
    body += [
        f'<section id="{section}"><h2>{titles[section]}</h2>{_figure_div(section, figures[section])}</section>'
        for section in FIGURE_SECTIONS
    ]
    nav_sections = list(SECTIONS)
    explained = explanations_section(run.root)
    if explained is not None:
        body.append(f'<section id="explanations"><h2>Explanations</h2>{explained}</section>')
        nav_sections.append(("explanations", "Explanations"))
    missing = (
        '<div class="missing"><strong>Missing from this run:</strong> '
        + ", ".join(f"<code>{escape(part)}</code>" for part in run.missing)
        + " (the sections that need them say so).</div>"
        if run.missing
        else ""
    )
    nav = "".join(f'<a href="#{section}">{escape(title)}</a>' for section, title in nav_sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>finfusion report: {escape(run.info.name)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<main>
<h1>finfusion report: {escape(run.info.name)}</h1>
<p class="meta">run folder <code>{escape(str(run.root.resolve()))}</code> &middot;
generated {generated:%Y-%m-%d %H:%M:%S} UTC</p>
<nav>{nav}</nav>
{missing}
{"".join(body)}
</main>
</body>
</html>
"""


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's HTML report (default RUN/report/report.html) and metrics.json + metrics.csv beside it.

    Returns the path of the HTML file. Raises FinfusionError for a missing run folder, a part that breaks the
    contract, or an `out` inside the run folder itself (its metrics.json would be overwritten).
    """
    run = load_run(run_dir)
    html_path = out if out is not None else run_dir / "report" / REPORT_NAME
    if html_path.parent.resolve() == run_dir.resolve():
        raise FinfusionError(
            f"{html_path}: the report goes beside its metrics.json/csv and would overwrite the run's {METRICS_FILE}; "
            "choose another folder"
        )
    page = render_html(run, datetime.now(UTC))
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    metrics = run.metrics if run.metrics is not None else Metrics(models={})
    dump_metrics(html_path.parent / "metrics.json", metrics)
    with atomic_path(html_path.parent / "metrics.csv") as tmp:
        metrics_frame(metrics).write_csv(tmp)
    return html_path


def write_explanations_report(run_dir: Path) -> Path:
    """RUN/report/explanations.html: the Explanations section of the stored explanations (`finfusion explain`) as a
    page of its own, for a trained run's folder (an evaluation's report.html shows the same section)."""
    section = explanations_section(run_dir)
    if section is None:
        raise FinfusionError(f"{run_dir} has no stored explanation (finfusion explain {run_dir} --at SYMBOL:DATE)")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>finfusion explanations: {escape(run_dir.resolve().name)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<main>
<h1>finfusion explanations: {escape(run_dir.resolve().name)}</h1>
<section id="explanations"><h2>Explanations</h2>{section}</section>
</main>
</body>
</html>
"""
    path = run_dir / "report" / EXPLANATIONS_PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
