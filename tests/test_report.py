"""The run folder contract, the plots and the HTML report (rendered in headless Chromium when it is installed)."""

from __future__ import annotations

import json
import math
import re
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from scipy import stats
from typer.testing import CliRunner

from finfusion.commands.report import report
from finfusion.errors import FinfusionError
from finfusion.evaluation import plots
from finfusion.evaluation.report import (
    FIGURE_SECTIONS,
    SECTIONS,
    best_models,
    metric_goal,
    metrics_table_html,
    write_report,
)
from finfusion.evaluation.run_layout import (
    EQUITY_FILE,
    FORECASTS_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    Metrics,
    load_forecasts,
    load_metrics,
    load_run,
    quantile_column,
    write_equity,
    write_forecasts,
    write_metrics,
    write_weights,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
LEVELS = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
START = datetime(2023, 1, 2, 21, tzinfo=UTC)
SQRT2 = math.sqrt(2.0)


def _days(count: int) -> list[datetime]:
    return [START + timedelta(days=i) for i in range(count)]


def _equity(rng: np.random.Generator, days: list[datetime]) -> pl.DataFrame:
    steps = rng.normal([0.0006, 0.0003], [0.01, 0.009], size=(len(days), 2))
    curves = np.exp(np.cumsum(steps, axis=0))
    return pl.DataFrame({"ts": days, "strategy": curves[:, 0], "benchmark": curves[:, 1]})


def _weights(rng: np.random.Generator, days: list[datetime]) -> pl.DataFrame:
    raw = rng.normal(size=(len(days), len(SYMBOLS)))
    weights = raw / np.abs(raw).sum(axis=1, keepdims=True)
    return pl.DataFrame(
        {
            "ts": [day for day in days for _ in SYMBOLS],
            "symbol": SYMBOLS * len(days),
            "weight": weights.ravel(),
        }
    )


def _forecasts(rng: np.random.Generator, days: list[datetime], horizon: int = 10, every: int = 20) -> pl.DataFrame:
    """Calibrated Gaussian random-walk forecasts: quantiles of the true law, and p_up = P(up | move + noise)."""
    origins = np.arange(0, len(days) - horizon, every)
    steps = np.arange(1, horizon + 1)
    origin, h = np.repeat(origins, horizon), np.tile(steps, len(origins))
    spread = np.sqrt(h)  # the random walk has unit steps
    parts = []
    for symbol in SYMBOLS:
        prices = 100 + np.cumsum(rng.normal(0.0, 1.0, size=len(days)))
        base, actual = prices[origin], prices[origin + h]
        noisy_move = actual - base + rng.normal(0.0, spread)
        columns = {
            "symbol": [symbol] * len(h),
            "ts": [days[i] for i in origin],
            "h": h,
            "target_ts": [days[i] for i in origin + h],
            "actual": actual,
            "base": base,
            "p_up": stats.norm.cdf(noisy_move / (spread * SQRT2)),
        }
        parts.append(pl.DataFrame(columns | {quantile_column(q): base + spread * stats.norm.ppf(q) for q in LEVELS}))
    return pl.concat(parts)


def _metrics() -> Metrics:
    return Metrics(
        models={
            "cga": {"sharpe": 1.4, "max_drawdown": -0.12, "rmse": 1.9, "crps": 0.8, "directional_accuracy": 0.56},
            "random_walk": {"sharpe": 0.0, "max_drawdown": -0.2, "rmse": 2.1, "crps": 1.0, "directional_accuracy": 0.5},
            "drift": {"sharpe": 0.6, "max_drawdown": -0.3, "rmse": 1.7, "crps": 0.9, "directional_accuracy": 0.52},
        },
        baselines=["random_walk", "drift"],
        significance=[
            {"model": "cga", "baseline": "random_walk", "metric": "crps", "test": "diebold_mariano", "p_value": 0.01},
            {"model": "cga", "baseline": "drift", "metric": "crps", "test": "diebold_mariano", "p_value": 0.2},
        ],
    )


def make_run(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    days = _days(250)
    write_equity(root, _equity(rng, days))
    write_weights(root, _weights(rng, days))
    write_forecasts(root, _forecasts(rng, days))
    write_metrics(root, _metrics())
    return root


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("run") / "cga-demo")
    return write_report(run)


class FigureScan(HTMLParser):
    """For each <div id="fig-..."> in a DOM: whether an <svg class="main-svg"> was drawn inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.drawn: dict[str, bool] = {}
        self.current: str | None = None
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if self.current is None and tag == "div" and (found.get("id") or "").startswith("fig-"):
            self.current, self.depth = str(found["id"]), 0
            self.drawn[self.current] = False
        if self.current is None:
            return
        if tag == "div":
            self.depth += 1
        if tag == "svg" and "main-svg" in (found.get("class") or "").split():
            self.drawn[self.current] = True

    def handle_endtag(self, tag: str) -> None:
        if self.current is not None and tag == "div":
            self.depth -= 1
            if self.depth == 0:
                self.current = None


# ---------------------------------------------------------------- the page


def test_report_is_self_contained_with_every_section(full_report: Path) -> None:
    page = full_report.read_text(encoding="utf-8")
    assert full_report.name == "report.html" and full_report.parent.name == "report"
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"@import|url\(\s*[\"']?(https?:)?//", page, re.I)
    assert page.count("* plotly.js v") == 1
    assert page.count("<script") == 1 + len(FIGURE_SECTIONS)
    for section, title in SECTIONS:
        assert f'<section id="{section}">' in page and f">{title}</h2>" in page
    for section in FIGURE_SECTIONS:
        assert f'id="fig-{section}"' in page
    assert "cga-demo" in page and "Missing from this run" not in page and "Not shown" not in page


def test_metric_table_puts_baselines_last_and_highlights_the_best(full_report: Path) -> None:
    page = full_report.read_text(encoding="utf-8")
    table = page[page.index('<table id="metrics-table">') : page.index("</table>", page.index("metrics-table"))]
    headers = re.findall(r"<th[^>]*>([^<]+)", table)
    assert headers == ["metric", "cga", "random_walk", "drift"]
    rows = {
        re.search(r"<td>([a-z_]+)", row).group(1): re.findall(r"<td( class=\"[^\"]*\")?>([^<]*)</td>", row)
        for row in re.findall(r"<tr><td>.*?</tr>", table)
    }
    best = {metric: [value for cls, value in cells if "best" in cls] for metric, cells in rows.items()}
    assert best == {
        "sharpe": ["1.4"],
        "max_drawdown": ["-0.12"],
        "rmse": ["1.7"],
        "crps": ["0.8"],
        "directional_accuracy": ["0.56"],
    }
    significance = page[page.index('<table id="significance-table">') :]
    assert '<td class="significant">0.01</td>' in significance and "<td>0.2</td>" in significance


def test_metrics_json_and_csv_are_written_beside_the_page(full_report: Path) -> None:
    payload = json.loads((full_report.parent / "metrics.json").read_text())
    assert payload["models"] == _metrics().models and payload["baselines"] == ["random_walk", "drift"]
    assert len(payload["significance"]) == 2
    table = pl.read_csv(full_report.parent / "metrics.csv")
    assert table.columns == ["metric", "cga", "random_walk", "drift"]
    assert table.filter(pl.col("metric") == "rmse").row(0) == ("rmse", 1.9, 2.1, 1.7)


def test_missing_parts_are_named_and_the_rest_still_renders(tmp_path: Path) -> None:
    run = tmp_path / "partial"
    write_metrics(run, _metrics())
    page_path = write_report(run, tmp_path / "out" / "page.html")
    page = page_path.read_text(encoding="utf-8")
    for part in (EQUITY_FILE, WEIGHTS_FILE, FORECASTS_FILE):
        assert f"<code>{part}</code>" in page and f"Not shown: {part} is missing." in page
    assert "fig-" not in page and 'id="metrics-table"' in page
    assert (tmp_path / "out" / "metrics.csv").exists()


def test_an_empty_run_folder_gives_a_page_that_says_everything_is_missing(tmp_path: Path) -> None:
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert f"{METRICS_FILE} is missing: no metric table." in page
    assert page.count("Not shown:") == len(FIGURE_SECTIONS)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["models"] == {}


def test_forecasts_without_p_up_or_intervals_say_why(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    forecasts = _forecasts(rng, _days(60)).select("symbol", "ts", "h", "target_ts", "actual", "q0.5")
    write_forecasts(tmp_path, forecasts)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert 'id="fig-fan"' in page
    assert "has no central intervals" in page and "has no p_up column" in page


def test_report_refuses_to_overwrite_the_runs_metrics(tmp_path: Path) -> None:
    make_run(tmp_path)
    with pytest.raises(FinfusionError, match="overwrite"):
        write_report(tmp_path, tmp_path / "report.html")


# ---------------------------------------------------------------- the contract


def test_loaders_name_the_file_and_the_missing_field(tmp_path: Path) -> None:
    path = tmp_path / EQUITY_FILE
    path.parent.mkdir(parents=True)
    pl.DataFrame({"ts": _days(3), "benchmark": [1.0, 1.1, 1.2]}).write_parquet(path)
    with pytest.raises(FinfusionError, match=r"equity\.parquet.*field 'strategy'"):
        load_run(tmp_path)
    with pytest.raises(FinfusionError, match=r"equity\.parquet.*field 'strategy'"):
        write_report(tmp_path)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [([1.0, math.nan, 1.2], "NaN or infinite"), ([1.0, math.inf, 1.2], "NaN or infinite"), ([1.0, None, 1.2], "null")],
)
def test_equity_values_must_be_finite_numbers(tmp_path: Path, strategy: list[float | None], message: str) -> None:
    with pytest.raises(FinfusionError, match=rf"equity\.parquet, field 'strategy': .*{message}"):
        write_equity(tmp_path, pl.DataFrame({"ts": _days(3), "strategy": strategy}))


def test_run_json_names_the_run_and_sets_the_window(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    write_equity(tmp_path, _equity(rng, _days(40)))
    (tmp_path / "run.json").write_text(json.dumps({"name": "my run", "rolling_window": 10, "periods_per_year": 52}))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "finfusion report: my run" in page and "trailing 10 periods, annualised (52 periods a year)" in page
    (tmp_path / "run.json").write_text(json.dumps({"rolling_window": 1}))
    with pytest.raises(FinfusionError, match=r"run\.json, field 'rolling_window'"):
        write_report(tmp_path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda f: f.drop("target_ts"), "target_ts"),
        (lambda f: f.select("symbol", "ts", "h", "target_ts", "actual"), "q<level>"),
        (lambda f: f.with_columns(p_up=pl.col("p_up") + 1.0), "p_up"),
        (lambda f: f.with_columns(h=pl.col("h") - 1), "h"),
        (lambda f: pl.concat([f, f.head(1)]), "symbol, ts, h"),
        (lambda f: f.with_columns(symbol=pl.col("h")), "symbol"),
        (lambda f: f.with_columns(pl.col("q0.1").cast(pl.String)), "q0.1"),
    ],
)
def test_forecast_contract_violations(tmp_path: Path, change: object, field: str) -> None:
    path = tmp_path / FORECASTS_FILE
    change(_forecasts(np.random.default_rng(2), _days(40))).write_parquet(path)  # type: ignore[operator]
    with pytest.raises(FinfusionError, match=rf"forecasts\.parquet.*field '{re.escape(field)}'"):
        load_forecasts(path)


def test_metrics_plain_form_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    path.write_text(json.dumps({"m": {"rmse": 1.0, "crps": None}, "rw": {"rmse": 2.0}}))
    metrics = load_metrics(path)
    assert metrics.baselines == [] and metrics.models["m"]["rmse"] == 1.0 and math.isnan(metrics.models["m"]["crps"])
    path.write_text(json.dumps({"models": {"m": {"rmse": "low"}}}))
    with pytest.raises(FinfusionError, match=r"metrics\.json.*field 'm\.rmse'"):
        load_metrics(path)
    path.write_text(json.dumps({"models": {"m": {"rmse": 1.0}}, "baselines": ["rw"]}))
    with pytest.raises(FinfusionError, match=r"field 'baselines'"):
        load_metrics(path)


def test_timestamps_are_read_as_utc(tmp_path: Path) -> None:
    naive = pl.DataFrame({"ts": [datetime(2024, 1, 2, 21), datetime(2024, 1, 3, 21)], "strategy": [1.0, 1.01]})
    write_equity(tmp_path, naive)
    equity = load_run(tmp_path).equity
    assert equity is not None and equity.schema["ts"] == pl.Datetime("us", "UTC")
    assert equity["ts"][0] == datetime(2024, 1, 2, 21, tzinfo=UTC)


# ---------------------------------------------------------------- the numbers behind the plots


def test_drawdown_and_rolling_sharpe() -> None:
    equity = np.array([1.0, 1.2, 0.9, 1.08, 1.3])
    assert np.allclose(plots.drawdown(equity), [0.0, 0.0, -0.25, -0.1, 0.0])
    returns = equity[1:] / equity[:-1] - 1
    sharpe = plots.rolling_sharpe(equity, window=3, periods_per_year=252)
    assert np.isnan(sharpe[:3]).all()
    expected = returns[1:4].mean() / returns[1:4].std(ddof=1) * math.sqrt(252)
    assert sharpe[4] == pytest.approx(expected)
    wiped_out = plots.rolling_sharpe(np.array([1.0, 1.1, 0.9, 0.0, 0.1, 0.2]), window=2, periods_per_year=252)
    assert np.isfinite(wiped_out[2:4]).all() and np.isnan(wiped_out[4:]).all()


def test_nan_weights_and_actuals_are_read_as_unknown(tmp_path: Path) -> None:
    weights = pl.DataFrame({"ts": _days(2), "symbol": ["A", "A"], "weight": [0.5, math.nan]})
    write_weights(tmp_path, weights)
    loaded = load_run(tmp_path).weights
    assert loaded is not None and loaded["weight"].to_list() == [0.5, None]


def test_rolling_sharpe_is_point_in_time() -> None:
    equity = np.exp(np.cumsum(np.random.default_rng(3).normal(0.001, 0.01, 200)))
    changed = equity.copy()
    changed[120:] *= 1.5
    before, after = plots.rolling_sharpe(equity, 20, 252), plots.rolling_sharpe(changed, 20, 252)
    assert np.array_equal(before[:120], after[:120], equal_nan=True)
    assert not np.allclose(before[120:140], after[120:140])


def test_interval_coverage_counts_actuals_inside_each_central_interval() -> None:
    frame = pl.DataFrame(
        {
            "symbol": ["A"] * 4,
            "actual": [0.0, 2.0, None, -5.0],
            "q0.1": [-1.0, -1.0, -1.0, -1.0],
            "q0.25": [-0.5, -0.5, -0.5, -0.5],
            "q0.75": [0.5, 0.5, 0.5, 0.5],
            "q0.9": [1.0, 3.0, 1.0, 1.0],
        }
    )
    coverage = plots.interval_coverage(frame)
    assert coverage.select("nominal", "empirical", "n").rows() == [
        (pytest.approx(0.5), pytest.approx(1 / 3), 3),
        (pytest.approx(0.8), pytest.approx(2 / 3), 3),
    ]


def test_calibrated_forecasts_lie_near_the_diagonal() -> None:
    forecasts = _forecasts(np.random.default_rng(4), _days(400), horizon=1, every=1)
    coverage = plots.interval_coverage(forecasts)
    assert np.allclose(coverage["empirical"], coverage["nominal"], atol=0.05)
    bins = plots.reliability(forecasts).filter(pl.col("n") >= 100)
    assert bins.height >= 6 and np.allclose(bins["observed"], bins["predicted"], atol=0.1)


def test_reliability_bins_p_up_against_the_outcome() -> None:
    frame = pl.DataFrame(
        {
            "actual": [11.0, 9.0, 12.0, 13.0, None],
            "base": [10.0, 10.0, 10.0, 10.0, 10.0],
            "p_up": [0.05, 0.08, 0.85, 0.95, 0.5],
        }
    )
    table = plots.reliability(frame, bins=10)
    assert table.select("bin", "predicted", "observed", "n").rows() == [
        (0, pytest.approx(0.065), 0.5, 2),
        (8, pytest.approx(0.85), 1.0, 1),
        (9, pytest.approx(0.95), 1.0, 1),
    ]
    assert plots.reliability(frame.drop("base"), bins=2)["observed"].to_list() == [1.0, 1.0]


def test_metric_goals_and_ties() -> None:
    assert [metric_goal(m, {}) for m in ("rmse_h1", "sharpe", "max_drawdown", "coverage")] == [
        "min",
        "max",
        "min_abs",
        None,
    ]
    assert metric_goal("coverage", {"coverage": "max"}) == "max"
    assert best_models({"a": 1.0, "b": 1.0, "c": math.nan}, "min") == {"a", "b"}
    assert best_models({"a": -0.3, "b": 0.1}, "min_abs") == {"b"}


def test_fan_chart_draws_a_panel_per_chosen_symbol() -> None:
    forecasts = _forecasts(np.random.default_rng(5), _days(120))
    figure = plots.fan_chart(forecasts, symbols=["BBB", "DDD"], max_origins=2)
    assert [a.text for a in figure.layout.annotations] == ["BBB", "DDD"]
    bands = [t for t in figure.data if t.fill == "toself"]
    assert len(bands) == 2 * 2 * 3  # symbols x origins x nested intervals
    assert sum(1 for t in figure.data if t.name == "actual") == 2


# ---------------------------------------------------------------- the command


def test_report_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(report)
    run = tmp_path / "run"
    write_metrics(run, _metrics())
    result = CliRunner().invoke(app, [str(run), "--out", str(tmp_path / "html" / "r.html")])
    assert result.exit_code == 0, result.output
    assert "r.html" in result.output and f"missing: {EQUITY_FILE}" in result.output
    assert (tmp_path / "html" / "r.html").exists()
    failed = CliRunner().invoke(app, [str(tmp_path / "nope")])
    assert failed.exit_code == 2 and "run folder not found" in failed.output
    assert "Example" in CliRunner().invoke(app, ["--help"]).output


# ---------------------------------------------------------------- headless Chromium


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"headless Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)"
)
def test_every_plot_draws_in_headless_chromium(full_report: Path, tmp_path: Path) -> None:
    url = full_report.resolve().as_uri()
    dom = _chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    scan = FigureScan()
    scan.feed(dom.stdout)
    assert scan.drawn == {f"fig-{section}": True for section in FIGURE_SECTIONS}
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    shot = _chromium(tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1400,4800", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000


def test_one_step_forecasts_of_two_models_and_equity_without_benchmark(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    days = _days(80)
    one_step = _forecasts(rng, days, horizon=1, every=1)
    two_models = pl.concat([one_step.with_columns(model=pl.lit(name)) for name in ("cga", "random_walk")])
    write_forecasts(tmp_path, two_models)
    write_equity(tmp_path, _equity(rng, days).drop("benchmark"))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    for section in ("equity", "drawdown", "rolling-sharpe", "fan", "interval-calibration", "reliability"):
        assert f'id="fig-{section}"' in page
    assert "Forecasts with intervals vs actual (cga)" in page
    assert plots.interval_coverage(two_models)["model"].unique().sort().to_list() == ["cga", "random_walk"]
    assert [trace.name for trace in plots.equity_figure(_equity(rng, days).drop("benchmark")).data] == ["strategy"]


def test_a_strategy_that_never_trades_is_not_highlighted_as_best_on_return_or_drawdown() -> None:
    models = {
        "model": {"rmse": 0.03, "annual_return": 0.05, "max_drawdown": 0.10, "avg_turnover": 0.5},
        "random_walk": {"rmse": 0.02, "annual_return": 0.0, "max_drawdown": 0.0, "avg_turnover": 0.0},
    }
    html = metrics_table_html(Metrics(models=models, baselines=["random_walk"]))
    rows = {row.split(" ")[0]: row for row in html.split("<tr><td>")[1:]}
    assert 'class="baseline best">0.02' in rows["rmse"]  # point metrics still rank it
    assert 'class="best">0.1<' in rows["max_drawdown"] and 'class="best">0.05<' in rows["annual_return"]
