"""A walk-forward evaluation as a Markdown page (docs/results/*.md): the command, config, machine and tables."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from finfusion import __version__
from finfusion.data.atomic import atomic_path
from finfusion.data.calendar import from_us
from finfusion.forecasting.scoring import collapse_warnings
from finfusion.forecasting.walk_forward import Evaluation


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def machine() -> str:
    """One line naming the machine the numbers came from."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.platform()}, {platform.processor() or platform.machine()}, {cpus} CPUs, {device}"


def page_header(title: str, command: str, machine_note: str = "") -> list[str]:
    """The top of a results page: its title, when and by which versions it was made, the one command that makes it
    and the machine (`machine_note` appended to the machine line)."""
    return [
        f"# {title}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by finfusion {__version__} (torch {torch.__version__}).",
        "",
        "Reproduce with:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Machine: {machine()}{machine_note}.",
    ]


def results_markdown(evaluation: Evaluation, cfg: DictConfig, command: str, title: str) -> str:
    """The page: what ran, on what, the metric table (baselines marked), the Diebold-Mariano tests, the config."""
    metrics = evaluation.metrics
    names = list(dict.fromkeys(key for values in metrics.models.values() for key in values))
    lines = [
        *page_header(title, command),
        "",
        f"Design: {evaluation.design}; {evaluation.folds} fold(s), {evaluation.windows:,} scored test windows "
        "(every model scored on the same windows).",
        "",
        "| fold | first test decision | last test decision |",
        "|---|---|---|",
    ]
    for fold, (first, last) in enumerate(evaluation.fold_bounds):
        begin, end = from_us([first, last], "t").to_list()
        lines.append(f"| {fold} | {begin:%Y-%m-%d} | {end:%Y-%m-%d} |")
    warnings = collapse_warnings(evaluation.forecasts)
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {line.removeprefix('warning: ')}" for line in warnings)]
    lines += ["", "## Metrics (target: the log return of each forecast step; sign strategy after costs)", ""]
    lines.append("| model | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for model, values in metrics.models.items():
        label = f"{model} (baseline)" if model in metrics.baselines else f"**{model}**"
        lines.append(f"| {label} | " + " | ".join(_cell(values.get(name)) for name in names) + " |")
    lines += [
        "",
        "Every metric of the registry (evaluation/metric_registry.py) that the forecasts allow. MASE < 1 beats the "
        "one-step naive scale of each window; MAPE of log returns is dominated by realised returns near zero and is "
        "shown because it is asked for, not as a ranking; directional accuracy, precision / recall / F1 of up and "
        "down moves and MCC score the sign of every step; coverage and MSIS score the central 80% interval; "
        "price_rmse and price_mae score the price paths rebuilt from the return paths, in units of the decision "
        "bar's price; sharpe, annual_return, max_drawdown and avg_turnover are those of holding sign(step-1 "
        "forecast) in every symbol, equally weighted, through the backtester's cost model. A column suffixed with a "
        "subset (e.g. crps_planted_news) scores only that subset's steps.",
        "",
        "## Diebold-Mariano tests",
        "",
        "One-sided (H1: the model's expected loss is lower than the reference's), HLN-corrected, on the loss "
        "averaged per decision instant; `subset` names what is scored: all test windows, or e.g. planted_news (the "
        "steps whose bar a news item seen at the decision moves, on the synthetic market). Losses: absolute error, "
        "CRPS, direction error (1 where the forecast's sign is wrong; never tested against a reference whose "
        "forecast has no sign, such as the random walk's zero return, which is wrong on every step by construction). "
        "Every model with a sign is also tested on direction error against the best of the direction baselines "
        "(majority_class: the training span's most frequent sign; previous_sign: the sign of the window's last H "
        "bars; drift_sign: the sign of its mean return; logistic_direction: a logistic regression on its last bars; "
        "each fitted on the fold's training windows), the best on the windows scored (all, or the subset's): the "
        "hardest sign reference.",
        "",
        "| model | reference | loss | subset | statistic | p-value | mean loss difference | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for test in metrics.significance:
        lines.append(
            f"| {test['model']} | {test['baseline']} | {test['loss']} | {test.get('subset', 'all')} | "
            f"{test['statistic']:.3f} | {test['p_value']:.4f} | {test['mean_difference']:.3g} | {test['n']} |"
        )
    lines += ["", "## Config", "", "```yaml", OmegaConf.to_yaml(cfg, resolve=True).rstrip(), "```", ""]
    return "\n".join(lines)


def write_results(path: Path, evaluation: Evaluation, cfg: DictConfig, command: str, title: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(results_markdown(evaluation, cfg, command, title), encoding="utf-8")
    return path
