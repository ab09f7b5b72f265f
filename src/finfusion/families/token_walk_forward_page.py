"""The results page of a token-classification evaluation (families/token_walk_forward.py): the command, the setup
(data, trainer, every variant's inputs, size and parameter count), the folds, the pooled test metrics of the variants
and the baselines, the paired tests, the notes and the resolved config. Every number comes from the evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from finfusion.data.atomic import atomic_path
from finfusion.data.calendar import from_us
from finfusion.families.token_walk_forward import TEST, TokenEvaluation
from finfusion.forecasting.results import page_header

#: Model-part keys the setup table leaves out (paths and the name).
UNSIZED = ("name", "pretrained")


def _day(instant_us: int) -> str:
    return f"{from_us(np.asarray([instant_us], dtype=np.int64), 't')[0]:%Y-%m-%d}"


def _cell(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.4f}"


def _setup(evaluation: TokenEvaluation) -> list[str]:
    cfg = evaluation.cfg
    data, trainer = cfg.data, cfg.get("trainer", {})
    prices, texts = data.get("prices", {}), data.get("texts", {})
    lines = [
        f"- Data: tokens `{data.dataset}` of the bars `{data.bars}`, windows of {data.window} tokens up to the "
        f"decision bar, label `{data.label}` over the next {data.horizon} bars (dead band {data.dead_band}); "
        + (f"price window of {prices.lookback} bars x {list(prices.channels)}; " if prices.get("enabled") else "")
        + (
            f"the {texts.max_texts} latest texts of {texts.window} session(s); "
            if texts.get("enabled")
            else "no texts; "
        )
        + (
            f"vocabulary of `{data.vocabulary}`."
            if data.get("vocabulary")
            else "vocabulary of each fold's training span."
        ),
        f"- Training: at most {trainer.get('max_epochs')} epochs of {trainer.get('limit_train_batches') or 'all'} "
        f"batches of {data.batch_size} windows, lr {cfg.optim.lr}, task `{cfg.task.name}` ({cfg.task.get('loss')}); "
        f"the checkpoint with the best {trainer.checkpoint.monitor} on validation "
        f"({trainer.get('limit_val_batches') or 'all'} batches spread over the block) is scored once on test; "
        f"seed {trainer.get('seed', 0)}.",
        "",
        "| variant | model | reads | parameters | settings |",
        "|---|---|---|---|---|",
    ]
    for label, variant in evaluation.variants.items():
        settings = ", ".join(f"{k}={v}" for k, v in variant.part.items() if k not in UNSIZED and v is not None)
        start = " (from the pre-trained encoder)" if variant.part.get("pretrained") else ""
        lines.append(f"| {label} | {variant.part['name']}{start} | {', '.join(variant.inputs)} | "
                     f"{variant.parameters:,} | {settings} |")  # fmt: skip
    return lines


def write_token_page(path: Path, command: str, title: str, evaluation: TokenEvaluation) -> Path:
    """Write the page (Markdown) to `path`."""
    lines = [
        *page_header(title, command, f"; torch threads per process: {torch.get_num_threads()}"),
        "",
        "## Setup",
        "",
        *_setup(evaluation),
        "",
        "## Folds (walk forward, expanding training span; every model scored on the same test windows)",
        "",
        "| fold | training labels end before | validation from .. labels before | test decisions | windows "
        "(train / validation / labelled test) |",
        "|---|---|---|---|---|",
    ]
    for index, fold in enumerate(evaluation.folds):
        counts = fold.windows
        lines.append(
            f"| {index + 1} | {_day(fold.train_end)} | {_day(fold.train_end)} .. {_day(fold.val_end)} | "
            f"{_day(fold.first_test)} .. {_day(fold.last_test)} | {counts['train']:,} / {counts['val']:,} / "
            f"{counts['test']:,} |"
        )
    names = list(next(iter(evaluation.metrics.values())))
    lines += [
        "",
        f"## Test metrics ({evaluation.decisions:,} labelled decisions over the folds, {evaluation.up_rate:.1%} of "
        "class 1)",
        "",
        "| model | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for model, values in evaluation.metrics.items():
        label = f"{model} (baseline)" if model in evaluation.baselines else f"**{model}**"
        lines.append(f"| {label} | " + " | ".join(_cell(values[name]) for name in names) + " |")
    lines += [
        "",
        "## Paired tests",
        "",
        "| model | reference | decisions | instants | accuracy gain | DM statistic | one-sided p |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {t['model']} | {t['reference']} | {t['decisions']:,} | {int(t['instants']):,} | "
            f"{t['accuracy_gain']:+.4f} | {_cell(t['statistic'])} | {_cell(t['p_value'])} |"
            for t in evaluation.tests
        ),
        "",
        f"Test: {TEST}. The reference of the first rows is the best baseline by pooled accuracy.",
        "",
        "## Notes",
        "",
        *(f"- {note}" for note in evaluation.notes),
        "",
        "## Config",
        "",
        "```yaml",
        OmegaConf.to_yaml(evaluation.cfg, resolve=True).rstrip(),
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path
