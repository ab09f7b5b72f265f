"""A portfolio-family evaluation, the acceptance experiment of issue 8: on the synthetic market with planted news,
does the CGA model's out-of-sample Sharpe ratio after costs beat an equal-weight portfolio and its price-only twin?

Steps: make the seeded market and ingest it into WORK/lake (bars, texts); train the experiment (default
configs/experiment/cga_daily.yaml) with news into WORK/cga and as the price-only twin into WORK/price_only; predict
weights at every `evaluation.rebalance_every`-th bar of the test span (from `data.val_end`), which no training or
validation window reaches; backtest each with costs, and the equal-weight portfolio rebalanced at the same bars.
Written to WORK: comparison.json (every KPI, and one-sided Diebold-Mariano p-values that the CGA's per-bar returns
after costs exceed each baseline's) and comparison.html (equity curves, rolling Sharpe, the CGA's weights).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import plotly.io as pio
from omegaconf import DictConfig, open_dict

from finfusion.config import load_config
from finfusion.data.atomic import atomic_path, write_json_atomic
from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import make_and_ingest
from finfusion.evaluation.portfolio_plots import comparison_figure, portfolio_figures
from finfusion.evaluation.significance import diebold_mariano
from finfusion.evaluation.weights_backtest import PortfolioEvaluation
from finfusion.families.pipeline import train_run
from finfusion.families.portfolio import backtest_test_span

DATASET = "synthetic"
STRATEGIES = ("cga", "price_only", "equal_weight")


def _variant(cfg: DictConfig, use_news: bool, lake: Lake) -> DictConfig:
    """`cfg` on this comparison's lake and synthetic dataset, with or without news."""
    variant = copy.deepcopy(cfg)
    with open_dict(variant):
        variant.model.use_news = use_news
        variant.data.bars = variant.data.texts = DATASET
        variant.data.symbols = None
        variant.data.lake = str(lake.root)
    return variant


def write_comparison(work: Path, evaluations: dict[str, PortfolioEvaluation], periods_per_year: float) -> None:
    """comparison.json and comparison.html in `work` (see the module docstring)."""
    cga = evaluations["cga"].returns
    p_values = {
        name: diebold_mariano(-cga, -evaluations[name].returns, alternative="less").p_value for name in STRATEGIES[1:]
    }
    payload = {
        "sharpe": {name: evaluation.sharpe for name, evaluation in evaluations.items()},
        "p_value_cga_beats": p_values,
        "kpis": {name: evaluation.kpis for name, evaluation in evaluations.items()},
    }
    write_json_atomic(work / "comparison.json", payload)
    figures = [comparison_figure(evaluations), *portfolio_figures(evaluations["cga"], 63, periods_per_year).values()]
    html = "".join(pio.to_html(fig, full_html=False, include_plotlyjs=i == 0) for i, fig in enumerate(figures))
    with atomic_path(work / "comparison.html") as tmp:
        tmp.write_text(f"<html><body>{html}</body></html>", encoding="utf-8")


def compare_on_synthetic(
    work_dir: str | Path,
    *,
    market: SyntheticConfig | None = None,
    experiment: str | Path = "cga_daily",
    overrides: Sequence[str] = (),
) -> dict[str, float]:
    """Out-of-sample Sharpe ratios after costs of `cga`, `price_only` and `equal_weight` (see the module docstring).

    `market` defaults to `SyntheticConfig()` at the experiment's `data.freq`; `overrides` are config overrides
    (e.g. "trainer.max_epochs=5").
    """
    work = Path(work_dir)
    cfg = load_config(experiment, overrides)
    lake = Lake(work / "lake")
    make_and_ingest(lake, market or SyntheticConfig(freq=str(cfg.data.freq)), DATASET)
    evaluations: dict[str, PortfolioEvaluation] = {}
    for name, use_news in (("cga", True), ("price_only", False)):
        run = train_run(_variant(cfg, use_news, lake), work / name)
        evaluations[name], equal = backtest_test_span(run)
    evaluations["equal_weight"] = equal
    periods_per_year = float(cfg.evaluation.periods_per_year)
    write_comparison(work, evaluations, periods_per_year)
    return {name: evaluations[name].sharpe for name in STRATEGIES}
