"""The movement family's evaluation on any daily dataset (`finfusion evaluate`, task movement).

Folds (walk forward). The config's splits are the first fold; `evaluation.folds` = K > 1 adds K - 1 more, each
moving dev and test forward by the test span's length while the train span grows (its start stays). Each fold's
samples are rebuilt (samples/daily_movement.py): the normaliser is fitted on the fold's train span and every label
is purged at its split's end, so nothing of a fold's dev or test reaches its training.

Models, per fold, each trained with every seed of `evaluation.seeds` (default 3), its checkpoint chosen on the whole
dev split, scored once on test:
- the config's model;
- when the data has texts and the model reads them, its twins of the same architecture: `price_only` (every text
  removed) and `placebo` (every text keeps its symbol, day and time, its content is another text's: a permutation of
  all texts seeded by `evaluation.placebo_seed` plus the fold's index, samples/daily_movement_lake.py). A text model
  whose gain over the price-only twin is matched by the placebo learned from the extra branch, not from reading.

Direction baselines on the same test targets (never a forecast without a sign): `majority_class` (the train
labels' majority), `previous_sign` (the sign of the horizon's move ending at day t-1; the train majority where the
history is too short), `drift_sign` (the sign of the lag days' mean move) and `logistic_direction` (scikit-learn
logistic regression on the flattened price window [L x C], fitted on the fold's train split).

Scores (the metric registry): accuracy, MCC, F1 of the up class, and for models with probabilities AUC and Brier;
a model's row is the mean over its seeds. Tests: per-decision 0/1 errors (a model's: the mean over its seeds, so the
test runs across seeds) averaged per test day (the decisions of one day share the market), then a one-sided
Diebold-Mariano test (HLN) of the model against the best direction baseline (highest test accuracy), the price-only
twin and the placebo twin, over all test decisions and on the subsets with_texts / without_texts (decisions whose
window holds a text, or none). A model whose seeds predict one class on every test decision is flagged.

Outputs in the evaluation folder: forecasts.parquet (P(up) per model and decision; the labels as `actual` against
`base` 0.5), metrics.json and the HTML report (metrics, tests, the reliability diagram), and the results page.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from omegaconf import DictConfig, OmegaConf

from finfusion.errors import FinfusionError
from finfusion.families.base import EvaluationResult, Progress

if TYPE_CHECKING:
    from finfusion.samples.daily_movement import DailyMovementConfig, DailyMovementSamples
    from finfusion.samples.daily_movement_lake import DailyInputs

#: `published`: rows shown beside ours on the results page, [{model, accuracy, mcc, source}, ...].
EVALUATION_DEFAULTS: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "folds": 1,
    "placebo_seed": 0,
    "twins": True,
    "published": [],
}
SIGN_BASELINES = ("majority_class", "previous_sign", "drift_sign", "logistic_direction")
DM_TEST = "Diebold-Mariano (HLN), one-sided, on daily mean 0/1 errors"


@dataclass(frozen=True)
class Scored:
    """One model's test decisions over every fold: P(up) [M] (None: a sign without a probability), the per-decision
    error [M] (mean over seeds), and its metrics (mean over seeds)."""

    prob_up: np.ndarray | None
    error: np.ndarray
    metrics: dict[str, float]
    collapsed: bool = False


def fold_configs(config: DailyMovementConfig, folds: int) -> list[DailyMovementConfig]:
    """The config's splits, then `folds` - 1 more with dev and test moved forward by the test span's length each."""
    if folds < 1:
        raise FinfusionError(f"evaluation.folds must be at least 1, got {folds}")
    spans = config.spans
    step = spans["test"][1] - spans["test"][0]

    def moved(shift: timedelta) -> DailyMovementConfig:
        train, dev, test = spans["train"], spans["dev"], spans["test"]
        splits = (
            ("train", train[0], train[1] + shift),
            ("dev", dev[0] + shift, dev[1] + shift),
            ("test", test[0] + shift, test[1] + shift),
        )
        return replace(config, splits=splits)

    return [moved(step * fold) for fold in range(folds)]


def reads_texts(model: str) -> bool:
    """Whether the registered model `model` reads texts (a price model has no twins)."""
    from finfusion.models.registry import model_class
    from finfusion.samples.contract import TEXT_EMB

    return TEXT_EMB in model_class(model).inputs


def model_scores(labels: np.ndarray, predicted: np.ndarray, prob_up: np.ndarray | None) -> dict[str, float]:
    """accuracy, mcc, f1_up, and auc and brier when `prob_up` is given ([M] each)."""
    from finfusion.evaluation.metric_registry import metric_table

    names = ("accuracy", "mcc", "f1_up") + (() if prob_up is None else ("auc", "brier"))
    return metric_table(labels=labels, predicted=predicted, prob_up=prob_up, names=names)


def sign_baselines(samples: DailyMovementSamples) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """(predicted class [M_test], P(up) [M_test] or None) of each direction baseline on the test split."""
    from sklearn.linear_model import LogisticRegression

    train, test = samples.rows("train"), samples.rows("test")
    majority = int(np.mean(samples.labels[train]) >= 0.5)
    targets = samples.targets[test]
    previous = targets["previous_move"].to_numpy()
    flat = samples.price.reshape(len(samples.price), -1)
    logistic = LogisticRegression(max_iter=1000).fit(flat[train], samples.labels[train])
    prob = logistic.predict_proba(flat[test])[:, 1]
    return {
        "majority_class": (np.full(len(test), majority, dtype=np.int64), None),
        "previous_sign": (np.where(np.isfinite(previous), previous > 0, majority).astype(np.int64), None),
        "drift_sign": ((targets["lag_mean_move"].to_numpy() > 0).astype(np.int64), None),
        "logistic_direction": ((prob > 0.5).astype(np.int64), prob),
    }


def _train_variant(cfg: DictConfig, samples: DailyMovementSamples, seeds: Sequence[int], run_dir: Path) -> np.ndarray:
    """P(up) [S, M_test] of `cfg`'s model trained on `samples` with each seed (checkpoint chosen on dev)."""
    from finfusion.families.movement import family_data, movement_rows
    from finfusion.families.pipeline import train_run

    data = family_data(samples, cfg)
    probs = []
    for seed in seeds:
        seed_dir = run_dir / f"seed{seed}"
        if seed_dir.exists():
            shutil.rmtree(seed_dir)
        run = train_run(OmegaConf.merge(cfg, {"trainer": {"seed": seed}}), seed_dir, resume="never", data=data)
        rows = movement_rows(run.model, data.test, samples.symbols, int(cfg.data.batch_size))
        probs.append(rows["prob_up"].to_numpy())
    return np.stack(probs)


def _scored_model(labels: np.ndarray, probs: np.ndarray) -> Scored:
    """A trained model's Scored from its seeds' P(up) [S, M]: the seeds' mean metrics and mean per-decision error."""
    predicted = (probs > 0.5).astype(np.int64)  # [S, M]
    per_seed = [model_scores(labels, p, q) for p, q in zip(predicted, probs, strict=True)]
    metrics = {name: float(np.nanmean([s[name] for s in per_seed])) for name in per_seed[0]}
    if len(per_seed) > 1:
        metrics["accuracy_std"] = float(np.std([s["accuracy"] for s in per_seed], ddof=1))
    collapsed = any(np.unique(p).size == 1 for p in predicted)
    error = np.mean(predicted != labels[None, :], axis=0)
    return Scored(probs.mean(axis=0), error, metrics, collapsed)


def daily_error_test(days: np.ndarray, error: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """One-sided DM of the daily mean errors of the model against a reference ([M] each, days [M])."""
    from finfusion.evaluation.significance import diebold_mariano

    frame = pl.DataFrame({"day": days, "model": error, "reference": reference})
    daily = frame.group_by("day").agg(pl.col("model").mean(), pl.col("reference").mean()).sort("day")
    difference = float(frame["reference"].mean() - frame["model"].mean())
    if daily.height < 3 or np.allclose(daily["model"].to_numpy(), daily["reference"].to_numpy()):
        return {"accuracy_gain": difference, "statistic": float("nan"), "p_value": float("nan"), "days": daily.height}
    result = diebold_mariano(daily["model"].to_numpy(), daily["reference"].to_numpy(), alternative="less")
    return {"accuracy_gain": difference, "statistic": result.statistic, "p_value": result.p_value, "days": daily.height}


def evaluate_movement(
    cfg: DictConfig, inputs: DailyInputs, config: DailyMovementConfig, run_dir: Path, progress: Progress
) -> EvaluationResult:
    """The evaluation of the module docstring into `run_dir`."""
    options = {**EVALUATION_DEFAULTS, **OmegaConf.to_container(cfg.get("evaluation") or OmegaConf.create({}))}
    seeds = [int(seed) for seed in options["seeds"]]
    published = [published_row(row) for row in options["published"]]
    name = str(cfg.get("name", cfg.model.name))
    fold_list = fold_configs(config, int(options["folds"]))
    folds = [inputs.build(fold) for fold in fold_list]
    twins = inputs.texts is not None and bool(options["twins"]) and reads_texts(str(cfg.model.name))
    variants: dict[str, list[np.ndarray]] = {name: []}
    if twins:
        variants |= {"price_only": [], "placebo": []}
    baseline_parts: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {b: [] for b in SIGN_BASELINES}
    labels, days, symbols, text_counts = [], [], [], []
    for index, samples in enumerate(folds):
        test = samples.rows("test")
        if test.size == 0 or samples.rows("train").size == 0 or samples.rows("dev").size == 0:
            raise FinfusionError(f"fold {index + 1}: {samples.counts()} targets per split; every split needs some")
        spans = ", ".join(f"{split} [{start}, {end})" for split, start, end in samples.config.splits)
        progress(f"fold {index + 1}/{len(folds)}: {spans}; {samples.counts()}")
        labels.append(samples.labels[test])
        days.append(samples.targets["day"].to_numpy()[test])
        symbols.append(samples.targets["symbol"].to_numpy()[test])
        text_counts.append(samples.text_counts()[test])
        versions = {name: samples}
        if twins:
            placebo_seed = int(options["placebo_seed"]) + index
            placebo = inputs.with_texts_permuted(placebo_seed).build(fold_list[index])
            versions |= {"price_only": samples.without_texts(), "placebo": placebo}
        for variant, version in versions.items():
            progress(f"fold {index + 1}: training {variant} with seeds {seeds}")
            variants[variant].append(_train_variant(cfg, version, seeds, run_dir / f"fold{index + 1}" / variant))
        for baseline, result in sign_baselines(samples).items():
            baseline_parts[baseline].append(result)
    truth = np.concatenate(labels)
    scored = {v: _scored_model(truth, np.concatenate(parts, axis=1)) for v, parts in variants.items()}
    for baseline, parts in baseline_parts.items():
        predicted = np.concatenate([p for p, _ in parts])
        probs = None if parts[0][1] is None else np.concatenate([q for _, q in parts])
        error = (predicted != truth).astype(np.float64)
        scored[baseline] = Scored(probs, error, model_scores(truth, predicted, probs))
    test_days, seen = np.concatenate(days), np.concatenate(text_counts)
    tests = _tests(name, scored, truth, test_days, seen, twins)
    _write_run(run_dir, name, scored, truth, test_days, np.concatenate(symbols), tests, config.horizon)
    return _result(name, scored, tests, folds, seeds, truth, seen, published)


def _tests(
    name: str, scored: Mapping[str, Scored], truth: np.ndarray, days: np.ndarray, seen: np.ndarray, twins: bool
) -> list[dict[str, Any]]:
    """The model against the best direction baseline and its twins, per subset (see the module docstring)."""
    best = max(SIGN_BASELINES, key=lambda b: scored[b].metrics["accuracy"])
    references = [best, *(("price_only", "placebo") if twins else ())]
    subsets = {"all": np.ones(len(truth), dtype=bool)}
    if twins:
        subsets |= {"with_texts": seen > 0, "without_texts": seen == 0}
    return [
        {
            "model": name,
            "baseline": other,
            "subset": subset,
            "decisions": int(keep.sum()),
            "metric": "direction error",
            "test": DM_TEST,
            **daily_error_test(days[keep], scored[name].error[keep], scored[other].error[keep]),
        }
        for other in references
        for subset, keep in subsets.items()
        if keep.any()
    ]


def _write_run(
    run_dir: Path,
    name: str,
    scored: Mapping[str, Scored],
    truth: np.ndarray,
    days: np.ndarray,
    symbols: np.ndarray,
    tests: list[dict[str, Any]],
    horizon: int,
) -> None:
    """forecasts.parquet (models with P(up)), metrics.json and the HTML report in `run_dir`."""
    from finfusion.evaluation.metric_registry import metric_goals
    from finfusion.evaluation.report import write_report
    from finfusion.evaluation.run_layout import Metrics, write_forecasts, write_metrics

    origin = pl.Series(days).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    frames = [
        pl.DataFrame(
            {
                "model": model,
                "symbol": symbols,
                "ts": origin,
                "h": horizon,
                "target_ts": origin,
                "actual": truth.astype(np.float64),
                "base": 0.5,
                "p_up": np.asarray(result.prob_up, dtype=np.float64),
            }
        )
        for model, result in scored.items()
        if result.prob_up is not None
    ]
    write_forecasts(run_dir, pl.concat(frames).with_columns(pl.col("h").cast(pl.Int64)))
    models = {model: result.metrics for model, result in scored.items()}
    names = sorted({metric for values in models.values() for metric in values})
    goals = {metric: goal for metric, goal in metric_goals(names).items() if goal is not None}
    baselines = [b for b in scored if b != name]
    write_metrics(run_dir, Metrics(models=models, baselines=baselines, goals=goals, significance=tests))
    write_report(run_dir)


def published_row(row: Any) -> dict[str, Any]:
    """One `evaluation.published` row, checked: {model, accuracy, mcc, source}."""
    keys = {"model", "accuracy", "mcc", "source"}
    if not isinstance(row, Mapping) or set(row) != keys:
        raise FinfusionError(f"evaluation.published: each row is {{model, accuracy, mcc, source}}, got {row!r}")
    try:
        return {"model": str(row["model"]), "accuracy": float(row["accuracy"]), "mcc": float(row["mcc"]),
                "source": str(row["source"])}  # fmt: skip
    except (TypeError, ValueError):
        raise FinfusionError(f"evaluation.published: accuracy and mcc must be numbers, got {row!r}") from None


def _result(
    name: str,
    scored: Mapping[str, Scored],
    tests: list[dict[str, Any]],
    folds: list[DailyMovementSamples],
    seeds: list[int],
    truth: np.ndarray,
    seen: np.ndarray,
    published: list[dict[str, Any]],
) -> EvaluationResult:
    from finfusion.families.movement_page import write_movement_page

    first, last = folds[0].config.spans["test"][0], folds[-1].config.spans["test"][1]
    notes = [
        f"test {first} to {last} over {len(folds)} fold(s), {len(truth):,} decisions, {np.mean(truth):.1%} up, "
        f"{f'{np.mean(seen > 0):.1%} with a text; ' if seen.any() else ''}selection on dev only; seeds "
        f"{', '.join(map(str, seeds))}",
        *(
            f"{t['model']} vs {t['baseline']} ({t['subset']}, {t['decisions']:,} decisions): accuracy gain "
            f"{t['accuracy_gain']:+.4f}, {DM_TEST} p = {t['p_value']:.4f}"
            for t in tests
        ),
        *(
            f"warning: {m} predicts one class on every test decision for some seed"
            for m, s in scored.items()
            if s.collapsed
        ),
    ]

    def page(path: Path, command: str, title: str) -> Path:
        return write_movement_page(path, command, title, name, scored, tests, notes, folds, seeds, truth, published)

    return EvaluationResult(
        models={model: result.metrics for model, result in scored.items()},
        baselines=tuple(b for b in scored if b != name),
        notes=tuple(notes),
        write_page=page,
    )


def splits_of(value: Any) -> tuple[tuple[str, date, date], ...]:
    """`data.splits`: "acl18" (the StockNet preset) or {train: [start, end], dev: [...], test: [...]} of ISO dates."""
    from finfusion.samples.daily_movement import ACL18_SPLITS, SPLIT_NAMES

    if value == "acl18":
        return tuple((name, *span) for name, span in ACL18_SPLITS.items())
    if not isinstance(value, Mapping) or set(value) != set(SPLIT_NAMES):
        raise FinfusionError(
            "data.splits: give 'acl18' or {train: [start, end], dev: [start, end], test: [start, end]}, got "
            f"{value!r}"
        )
    out = []
    for split in SPLIT_NAMES:
        span = value[split]
        try:
            start, end = (date.fromisoformat(str(day)) for day in span)
        except (TypeError, ValueError):
            message = f"data.splits.{split}: expected [YYYY-MM-DD, YYYY-MM-DD], got {span!r}"
            raise FinfusionError(message) from None
        out.append((str(split), start, end))
    return tuple(out)
