"""The relevance family's honest evaluation: the model trained with selection on validation (the pipeline's early
stopping and best checkpoint), the test span scored once, against baselines that make sense for each metric
(relevance/baselines.py), with Diebold-Mariano tests and the feature-group importance.

Metrics per horizon of h days (test samples whose label is known): `mse_{h}d` and `corr_{h}d` of the score against
the [-1, 1] label, `accuracy_{h}d` of the direction (the model: up probability above 1/2; score baselines: their
sign). Diebold-Mariano (one-sided: the model's loss is lower) on squared error and on the 0/1 direction loss, each
averaged over the stocks of a decision week so that the test is over weeks, with the long-run variance over
ceil(h / 7) weeks (labels of overlapping horizons are correlated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finfusion.evaluation.significance import diebold_mariano
from finfusion.relevance.baselines import DIRECTION_BASELINES, BaselineOutputs, baseline_outputs
from finfusion.relevance.importance import GroupImportance, group_columns, group_importance
from finfusion.relevance.predict import model_outputs
from finfusion.samples.contract import CONTEXT, DIRECTION, LABEL_MASK, ORIGIN_US, RELEVANCE, STOCK
from finfusion.samples.relevance import feature_groups

EVALUATION_DEFAULTS: dict[str, Any] = {
    "baselines": ["zero", "ridge", "lightgbm", "majority_class", "previous_sign"],
    "importance": {"repeats": 5, "integrated_gradients_steps": 32, "max_samples": 2000},
}
MODEL = "dual_tower"


@dataclass
class RelevanceEvaluation:
    """Test metrics per model, the Diebold-Mariano tests, the importance and the ground truth when planted."""

    horizons: list[int]
    metrics: dict[str, dict[str, float]]
    baselines: tuple[str, ...]
    tests: list[dict[str, Any]]
    importance: GroupImportance
    symbols: list[str]
    planted: dict[str, tuple[str, ...]]
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _metrics(
    score: np.ndarray | None, up: np.ndarray | None, label: np.ndarray, direction: np.ndarray, known: np.ndarray,
    horizons: list[int],
) -> dict[str, float]:  # fmt: skip
    out: dict[str, float] = {}
    for k, days in enumerate(horizons):
        keep = known[:, k]
        if score is not None and np.isfinite(score[keep, k]).all():
            out[f"mse_{days}d"] = float(np.mean((score[keep, k] - label[keep, k]) ** 2))
            if np.std(score[keep, k]) > 0:
                out[f"corr_{days}d"] = float(np.corrcoef(score[keep, k], label[keep, k])[0, 1])
        if up is not None:
            out[f"accuracy_{days}d"] = float(np.mean(up[keep, k] == (direction[keep, k] == 1)))
    return out


def _weekly(loss: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """The mean loss [W] of each decision week, in time order."""
    weeks, index = np.unique(origins, return_inverse=True)
    return np.bincount(index, weights=loss, minlength=len(weeks)) / np.bincount(index, minlength=len(weeks))


def _tests(
    model: BaselineOutputs, baselines: Mapping[str, BaselineOutputs], test: object, horizons: list[int]
) -> list[dict[str, Any]]:
    label, direction, known = test.column(RELEVANCE), test.column(DIRECTION), test.column(LABEL_MASK)
    origins = test.column(ORIGIN_US)
    results = []
    for k, days in enumerate(horizons):
        keep = known[:, k]
        lag = math.ceil(days / 7)
        losses = {"squared error": lambda out, k=k: (out.score[:, k] - label[:, k]) ** 2}
        losses["direction"] = lambda out, k=k: (out.up[:, k] != (direction[:, k] == 1)).astype(float)
        for loss_name, loss in losses.items():
            for name, baseline in baselines.items():
                if (loss_name == "squared error" and not np.isfinite(baseline.score).all()) or (
                    loss_name == "direction" and baseline.up is None
                ):
                    continue
                a = _weekly(loss(model)[keep], origins[keep])
                b = _weekly(loss(baseline)[keep], origins[keep])
                result = diebold_mariano(a, b, horizon=lag, alternative="less")
                results.append({"horizon": days, "loss": loss_name, "baseline": name, "p_value": result.p_value,
                                "statistic": result.statistic, "weeks": result.n})  # fmt: skip
    return results


def score_relevance(
    cfg: Any, model: Any, data: Any, planted: dict[str, tuple[str, ...]], seed: int = 0
) -> RelevanceEvaluation:
    """The evaluation (module docstring) of a trained `model` on the family's `data` (its stored state)."""
    options = {**EVALUATION_DEFAULTS, **dict(cfg.get("evaluation") or {})}
    importance_options = {**EVALUATION_DEFAULTS["importance"], **dict(options["importance"])}
    state, test = data.state, data.test
    horizons = [int(h) for h in state["horizons"]]
    outputs = model_outputs(model, test)
    ours = BaselineOutputs(outputs.score, outputs.prob_up > 0.5)
    baselines = baseline_outputs(list(options["baselines"]), data.train, data.val, test, seed)
    label, direction, known = test.column(RELEVANCE), test.column(DIRECTION), test.column(LABEL_MASK)
    metrics = {MODEL: _metrics(ours.score, ours.up, label, direction, known, horizons)}
    for name, baseline in baselines.items():
        score = None if name in DIRECTION_BASELINES else baseline.score
        metrics[name] = _metrics(score, baseline.up, label, direction, known, horizons)
    columns = group_columns(*feature_groups(state))
    importance = group_importance(
        model, test, columns, len(state["symbols"]), repeats=int(importance_options["repeats"]),
        steps=int(importance_options["integrated_gradients_steps"]),
        max_samples=int(importance_options["max_samples"]), seed=seed,
    )  # fmt: skip
    notes = [f"{name}: {baseline.note}" for name, baseline in baselines.items() if baseline.note]
    notes += _outside_training_range(data.train, test, state)
    return RelevanceEvaluation(
        horizons=horizons,
        metrics=metrics,
        baselines=tuple(baselines),
        tests=_tests(ours, baselines, test, horizons),
        importance=importance,
        symbols=list(state["symbols"]),
        planted=planted,
        notes=notes,
        counts={"train": len(data.train), "val": len(data.val), "test": len(test)},
    )


def _outside_training_range(train: Any, test: Any, state: Mapping[str, Any], share: float = 0.05) -> list[str]:
    """One note per feature whose test values fall outside the training span's range for more than `share` of the
    test samples (a level that drifted: the model extrapolates there)."""
    notes = []
    for key, groups in zip((CONTEXT, STOCK), feature_groups(state), strict=True):
        names = [name for group in groups.values() for name in group]
        seen, scored = train.column(key), test.column(key)
        outside = ((scored < seen.min(axis=0)) | (scored > seen.max(axis=0))).mean(axis=0)
        notes += [
            f"{name}: {outside[i]:.0%} of the test samples lie outside its training range"
            for i, name in enumerate(names)
            if outside[i] > share
        ]
    return notes


def planted_ranks(evaluation: RelevanceEvaluation) -> list[dict[str, Any]]:
    """For each planted group and for the stocks moved by none: each context group's mean per-stock permutation
    importance over those stocks, and how many of them have each context group ranked first (among the context
    groups)."""
    names = evaluation.importance.groups
    context = [i for i, name in enumerate(names) if name.startswith("context:")]
    sets = {group: set(symbols) for group, symbols in evaluation.planted.items()}
    sets["none"] = set(evaluation.symbols) - set().union(*sets.values())
    rows = []
    for group, members in sets.items():
        firsts: dict[str, int] = {}
        for s, symbol in enumerate(evaluation.symbols):
            values = evaluation.importance.per_stock[s, context]
            if symbol in members and np.isfinite(values).all():
                top = names[context[int(np.argmax(values))]].removeprefix("context:")
                firsts[top] = firsts.get(top, 0) + 1
        chosen = [s for s, symbol in enumerate(evaluation.symbols) if symbol in members]
        means = {names[c].removeprefix("context:"): float(np.nanmean(evaluation.importance.per_stock[chosen, c]))
                 for c in context} if chosen else {}  # fmt: skip
        rows.append({"stocks": group, "count": len(members), "first": firsts, "mean": means})
    return rows


def write_relevance_page(evaluation: RelevanceEvaluation, path: Path, command: str, title: str) -> Path:
    from finfusion.data.atomic import atomic_path
    from finfusion.relevance.page import relevance_page

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(relevance_page(evaluation, planted_ranks(evaluation), command, title), encoding="utf-8")
    return path
