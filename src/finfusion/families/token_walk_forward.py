"""The token-classification family's evaluation (`finfusion evaluate`): walk-forward folds, several variants trained
and scored on the same windows (an ablation in one evaluation), the direction baselines and paired tests.

    evaluation:
      walk_forward: null     # one fold: the data part's split, its test span from val_end on; or
                             # {first_test: DATE, validate: V, test: T, folds: K}: test blocks of T periods (distinct
                             # decision instants) from first_test on, at most K (the last shorter where the data
                             # ends); each fold validates on the V periods before its test block and trains on
                             # everything earlier (expanding)
      label: null            # the config's own model's name in the tables (default: its model name)
      variants: []           # other models on the same windows: registry or configs/model part names, or
                             # {label, part, set} (forecasting/walk_forward.py model_parts): {label: fusion_news,
                             # set: {news: true}} is the own model with its news branch on
      pairs: []              # [[a, b], ...]: one-sided tests that a's direction error is lower than b's

Each fold builds the data part again with the fold's split (samples/token_labels.py split_masks: training windows
end their labels before the validation block, validation windows theirs before the test block), so the vocabulary
(unless a pre-training run gives it) and the label thresholds are fitted on the fold's own training span. Every
variant is fine-tuned on the same fold data by the config's trainer (selection on validation) and scores the test
block once. A variant that reads a key the samples do not carry (texts without `data.texts`) is refused when built.

Baselines on the same test windows: `majority_class` (the fold's training labels' majority) and, for direction,
`previous_sign` (the sign of the k-bar return that ends at the decision bar).

Scores, pooled over the folds' labelled test decisions: accuracy, MCC and F1 of class 1 (up). Tests
(evaluation/classification.py `direction_error_test`): the 0/1 errors averaged per decision instant, a one-sided
Diebold-Mariano test (HLN) over k - 1 lags; every variant against the best baseline (the highest pooled accuracy:
the hardest reference) and each pair of `pairs`.

Run folders: one fold and one model train into RUN/model (a run `finfusion predict` reads); otherwise
RUN/<label>/fold<k>. The pivots label set (a tag per bar) is scored on one split against tagging every bar none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from finfusion.config import plain
from finfusion.errors import FinfusionError
from finfusion.families.base import EvaluationResult, FamilyData, Progress

EVALUATION_DEFAULTS: dict[str, Any] = {"walk_forward": None, "label": None, "variants": [], "pairs": []}
WALK_FORWARD_KEYS = ("first_test", "validate", "test", "folds")
METRICS = ("accuracy", "mcc", "f1_up")
TEST = "Diebold-Mariano (HLN), one-sided, on the 0/1 direction errors averaged per decision instant, k - 1 lags"


@dataclass(frozen=True)
class Fold:
    """One fold's split instants (UTC µs): training labels end before `train_end`, validation windows start there
    and end their labels before `val_end`, test windows start at `val_end` and before `test_end` (None: open)."""

    train_end: int
    val_end: int
    test_end: int | None


@dataclass
class FoldRecord:
    """What a fold scored: its split, window counts and labelled test decisions' first and last instant."""

    train_end: int
    val_end: int
    windows: dict[str, int]
    first_test: int
    last_test: int


@dataclass
class Variant:
    """A trained model of the evaluation: its model part, the inputs it reads and its parameter count."""

    part: dict[str, Any]
    inputs: tuple[str, ...] = ()
    parameters: int = 0
    predicted: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class Scored:
    """The labelled test decisions pooled over the folds: labels [M], decision instants [M], the label horizon k."""

    truth: np.ndarray
    instants: np.ndarray
    horizon: int


@dataclass
class TokenEvaluation:
    """Everything the page shows (families/token_walk_forward_page.py)."""

    cfg: DictConfig
    variants: dict[str, Variant]
    folds: list[FoldRecord]
    metrics: dict[str, dict[str, float]]
    baselines: tuple[str, ...]
    tests: list[dict[str, Any]]
    notes: tuple[str, ...]
    decisions: int
    up_rate: float


def evaluation_options(cfg: DictConfig) -> dict[str, Any]:
    """The evaluation part over `EVALUATION_DEFAULTS`, checked."""
    options = {**EVALUATION_DEFAULTS, **plain(cfg.get("evaluation"))}
    walk = options["walk_forward"]
    if walk is not None:
        missing = [key for key in WALK_FORWARD_KEYS if walk.get(key) is None]
        if missing:
            raise FinfusionError(f"evaluation.walk_forward: set {', '.join(missing)} (or walk_forward: null)")
    for pair in options["pairs"]:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise FinfusionError(f"evaluation.pairs: each pair is [model, reference], got {pair!r}")
    return options


def folds_of(instants_us: np.ndarray, walk: Mapping[str, Any]) -> list[Fold]:
    """The folds of `walk` (module docstring) over the decision instants [T] (sorted, distinct)."""
    from finfusion.evaluation.splits import WalkForward
    from finfusion.samples.portfolio import instant_us

    validate, test, count = int(walk["validate"]), int(walk["test"]), int(walk["folds"])
    first = int(np.searchsorted(instants_us, instant_us(walk["first_test"])))
    if validate < 1 or test < 1 or count < 1:
        raise FinfusionError("evaluation.walk_forward: validate, test and folds must be at least 1")
    if first - validate < 1:
        raise FinfusionError(
            f"evaluation.walk_forward: first_test {walk['first_test']} leaves {max(first - validate, 0)} periods to "
            f"train on before its {validate} validation periods"
        )
    splitter = WalkForward(train=first - validate, validate=validate, test=test, mode="expanding")
    folds = []
    for index in range(min(count, splitter.n_splits(instants_us.size))):
        start, stop = splitter.test_start(index), splitter.test_start(index) + test
        end = int(instants_us[stop]) if stop < instants_us.size else None
        folds.append(Fold(int(instants_us[start - validate]), int(instants_us[start]), end))
    if not folds:
        raise FinfusionError(f"evaluation.walk_forward: first_test {walk['first_test']} is after the last decision")
    return folds


def fold_config(cfg: DictConfig, fold: Fold) -> DictConfig:
    """`cfg` with the data part's split set to the fold's instants."""
    from finfusion.data.calendar import from_us

    bounds = [fold.train_end, fold.val_end] + ([] if fold.test_end is None else [fold.test_end])
    stamps = [stamp.isoformat() for stamp in from_us(np.asarray(bounds, dtype=np.int64), "t").to_list()]
    split = {"train_end": stamps[0], "val_end": stamps[1], "test_end": stamps[2] if len(stamps) > 2 else None}
    return OmegaConf.merge(cfg, {"data": {"split": split}})  # type: ignore[return-value]


def previous_sign(data: FamilyData) -> np.ndarray:
    """[M_test]: 1 when the k-bar return ending at the test window's decision bar rose (0 where it fell or the
    symbol has no window k bars earlier)."""
    from finfusion.samples.contract import ORIGIN_US, SYMBOL_INDEX

    everything, forward = data.extra["everything"], data.extra["forward"]
    horizon = int(data.extra["options"]["horizon"])
    symbols, origins = everything.column(SYMBOL_INDEX), everything.column(ORIGIN_US)
    position = {(int(s), int(t)): i for i, (s, t) in enumerate(zip(symbols, origins, strict=True))}
    out = []
    for s, t in zip(data.test.column(SYMBOL_INDEX), data.test.column(ORIGIN_US), strict=True):
        earlier = position[(int(s), int(t))] - horizon
        out.append(int(earlier >= 0 and symbols[earlier] == s and np.nan_to_num(forward[earlier]) > 0))
    return np.asarray(out, dtype=np.int64)


def evaluate_tokens(cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
    """The evaluation of the module docstring into `run_dir`."""
    from finfusion.families.pipeline import train_run
    from finfusion.families.token_classification import (
        FAMILY,
        class_rows,
        data_options,
        decision_instants,
        tagging_result,
    )
    from finfusion.forecasting.walk_forward import model_parts
    from finfusion.samples.contract import LABEL, ORIGIN_US

    options = evaluation_options(cfg)
    data_opts = data_options(cfg)
    label_set, horizon = str(data_opts["label"]), int(data_opts["horizon"])
    parts = model_parts(cfg, list(options["variants"]))
    walk = options["walk_forward"]
    folds: list[Fold | None] = [None] if walk is None else list(folds_of(decision_instants(cfg), walk))
    single = len(folds) == 1 and len(parts) == 1
    if label_set == "pivots":
        if not single:
            raise FinfusionError("the pivots tagger is scored on one split: drop evaluation.walk_forward and variants")
        progress(f"fine-tuning {cfg.model.name} (selection on validation) into {run_dir / 'model'}")
        return tagging_result(train_run(cfg, run_dir / "model", resume="never"))
    variants = {label: Variant(part) for label, part in parts.items()}
    baselines = ["majority_class", *(["previous_sign"] if label_set == "direction" else [])]
    guesses: dict[str, list[np.ndarray]] = {name: [] for name in baselines}
    truth, instants, records = [], [], []
    for index, fold in enumerate(folds):
        fold_cfg = cfg if fold is None else fold_config(cfg, fold)
        data = FAMILY.data(fold_cfg)
        labels = data.test.column(LABEL)
        known = labels >= 0
        if not known.any():
            raise FinfusionError(f"fold {index + 1}: the test block has no labelled decisions")
        origins = data.test.column(ORIGIN_US)[known]
        windows = {"train": len(data.train), "val": len(data.val), "test": int(known.sum())}
        records.append(FoldRecord(data.state["train_end_us"], data.state["val_end_us"], windows, int(origins.min()),
                                  int(origins.max())))  # fmt: skip
        progress(f"fold {index + 1}/{len(folds)}: {windows['train']:,} train, {windows['val']:,} val, "
                 f"{windows['test']:,} labelled test windows")  # fmt: skip
        truth.append(labels[known])
        instants.append(origins)
        train_labels = data.train.column(LABEL)
        majority = int(np.mean(train_labels[train_labels >= 0]) >= 0.5)
        guesses["majority_class"].append(np.full(int(known.sum()), majority, dtype=np.int64))
        if "previous_sign" in guesses:
            guesses["previous_sign"].append(previous_sign(data)[known])
        for label, variant in variants.items():
            variant_cfg = fold_cfg.copy()
            variant_cfg.model = OmegaConf.create(variant.part)
            folder = run_dir / "model" if single else run_dir / label / f"fold{index + 1}"
            progress(f"  fine-tuning {label} ({variant.part['name']}, selection on validation) into {folder}")
            run = train_run(variant_cfg, folder, resume="never", data=data)
            rows = class_rows(run.model, data.test, data.state["symbols"], label_set)
            variant.predicted.append(rows["predicted"].to_numpy()[known])
            variant.inputs = tuple(sorted(run.model.required_inputs()))
            variant.parameters = sum(p.numel() for p in run.model.parameters())  # type: ignore[attr-defined]
    scored = Scored(np.concatenate(truth), np.concatenate(instants), horizon)
    return _result(cfg, variants, guesses, scored, records, options)


def _result(
    cfg: DictConfig,
    variants: dict[str, Variant],
    guesses: dict[str, list[np.ndarray]],
    scored: Scored,
    records: list[FoldRecord],
    options: Mapping[str, Any],
) -> EvaluationResult:
    """Pooled metrics, the paired tests and the page."""
    from finfusion.data.calendar import from_us
    from finfusion.evaluation.classification import direction_error_test
    from finfusion.evaluation.metric_registry import metric_table

    truth = scored.truth
    predicted = {label: np.concatenate(v.predicted) for label, v in variants.items()}
    predicted |= {name: np.concatenate(parts) for name, parts in guesses.items()}
    metrics = {name: metric_table(labels=truth, predicted=p, names=METRICS) for name, p in predicted.items()}
    best = max(guesses, key=lambda name: metrics[name]["accuracy"])
    pairs = [(label, best) for label in variants]
    for pair in options["pairs"]:
        unknown = [name for name in pair if name not in variants]
        if unknown:
            raise FinfusionError(f"evaluation.pairs: '{unknown[0]}' is not a variant ({', '.join(variants)})")
        pairs.append((str(pair[0]), str(pair[1])))
    errors = {name: (p != truth).astype(np.float64) for name, p in predicted.items()}
    tests = [
        {"model": a, "reference": b, "decisions": int(truth.size),
         **direction_error_test(scored.instants, errors[a], errors[b], scored.horizon)}
        for a, b in pairs
    ]  # fmt: skip
    first, last = records[0].first_test, records[-1].last_test
    begin, end = (stamp.date() for stamp in from_us(np.asarray([first, last], dtype=np.int64), "t").to_list())
    notes = (
        f"test decisions {begin} to {end} over {len(records)} fold(s): {truth.size:,} labelled, {np.mean(truth):.1%} "
        f"of class 1; selection on validation only; trainer seed {cfg.get('trainer', {}).get('seed', 0)}",
        *(f"{t['model']} vs {t['reference']}: accuracy gain {t['accuracy_gain']:+.4f}, DM p = {t['p_value']:.4f}"
          for t in tests),
        *_collapsed(variants),
    )  # fmt: skip
    evaluation = TokenEvaluation(cfg, variants, records, metrics, tuple(guesses), tests, notes, int(truth.size),
                                 float(np.mean(truth)))  # fmt: skip

    def page(path: Path, command: str, title: str) -> Path:
        from finfusion.families.token_walk_forward_page import write_token_page

        return write_token_page(path, command, title, evaluation)

    return EvaluationResult(models=metrics, baselines=tuple(guesses), notes=notes, write_page=page)


def _collapsed(variants: Mapping[str, Variant]) -> list[str]:
    """A warning per variant that predicts one class on every test decision of some fold."""
    warnings = []
    for label, variant in variants.items():
        folds = [str(k + 1) for k, p in enumerate(variant.predicted) if np.unique(p).size == 1]
        if folds:
            warnings.append(f"warning: {label} predicts one class on every test decision of fold(s) {', '.join(folds)}")
    return warnings
