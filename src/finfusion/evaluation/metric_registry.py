"""The one metric registry: a metric is one function registered once, and every table that scores predictions reads
it (`metric_table`): walk-forward evaluation and its report and results pages, the movement family's scores, and the
forecast task's validation logs.

A metric declares the inputs it needs; `metric_table` scores every registered metric whose inputs are present:

- `point`: a point forecast [N] or [N, H] (given, else the sample median, else the 0.5 quantile) and the truth;
- `y_train`: the in-sample series for MASE / MSIS scales ([T] or [N, T]);
- `directions`: true and predicted classes: up / down / flat of truth and point against `reference` (within
  `threshold`), or given class labels (`labels` and `predicted`, e.g. 1 up, 0 down);
- `classes`: given class labels only;
- `probabilities`: given 0 / 1 class labels and the forecast probability of class 1 (`prob_up` [N]);
- `distribution`: sampled paths [..., S] or quantiles [..., Q] at `levels` [Q]; `quantiles`: quantiles only;
- `interval`: the central (1 - alpha) interval of the distribution (quantiles need the alpha/2 and 1 - alpha/2
  levels).

Adding a metric: one function with `@metric(name, needs=..., goal=...)` below (the formula itself may live
in `evaluation/metrics.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike

from finfusion.evaluation.metrics import (
    Array,
    crps_from_quantiles,
    crps_from_samples,
    directions,
    interval_coverage,
    mae,
    mape,
    mase,
    mcc,
    msis,
    pinball_loss,
    precision_recall_f1,
    quantile_interval,
    rmse,
    sample_interval,
)

INPUTS = frozenset(
    {"point", "y_train", "directions", "classes", "probabilities", "distribution", "quantiles", "interval"}
)


@dataclass(frozen=True)
class MetricInputs:
    """What a metric may read (see the module docstring); None where absent."""

    truth: Array | None
    point: Array | None
    samples: Array | None
    quantiles: Array | None
    levels: Array | None
    y_train: Array | None
    m: int
    reference: ArrayLike | None
    threshold: float
    alpha: float
    labels: np.ndarray | None
    predicted: np.ndarray | None
    prob_up: np.ndarray | None = None

    @cached_property
    def interval(self) -> tuple[Array, Array] | None:
        if self.samples is not None:
            return sample_interval(self.samples, self.alpha)
        if self.quantiles is not None and self.levels is not None:
            taus = self.levels
            if np.isclose(taus, self.alpha / 2).any() and np.isclose(taus, 1 - self.alpha / 2).any():
                return quantile_interval(self.quantiles, self.levels, self.alpha)
        return None

    @cached_property
    def classes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(true, predicted) classes: the given labels, else directions of truth and point against `reference`."""
        if self.labels is not None and self.predicted is not None:
            return np.asarray(self.labels), np.asarray(self.predicted)
        if self.point is None or self.reference is None or self.truth is None:
            return None
        return directions(self.truth, self.reference, self.threshold), directions(
            self.point, self.reference, self.threshold
        )

    def has(self, need: str) -> bool:
        present = {
            "point": self.point is not None and self.truth is not None,
            "y_train": self.y_train is not None,
            "directions": self.classes is not None,
            "classes": self.labels is not None and self.predicted is not None,
            "probabilities": self.labels is not None and self.prob_up is not None,
            "distribution": self.truth is not None and (self.samples is not None or self.quantiles is not None),
            "quantiles": self.truth is not None and self.quantiles is not None and self.levels is not None,
            "interval": self.truth is not None and self.interval is not None,
        }
        return present[need]


@dataclass(frozen=True)
class Metric:
    """A registered metric: its name, the inputs it needs, its goal ("max" or "min" is best; None: neither, e.g. an
    interval's coverage, which should match its nominal level) and its function."""

    name: str
    needs: frozenset[str]
    goal: str | None
    fn: Callable[[MetricInputs], float]


METRICS: dict[str, Metric] = {}


def metric(name: str, *, needs: set[str], goal: str | None = "min") -> Callable[..., Callable[..., float]]:
    """Register the decorated `fn(inputs) -> float` as `name` (once: a second registration is an error)."""
    unknown = set(needs) - INPUTS
    if unknown:
        raise ValueError(f"metric {name!r} needs unknown input(s) {sorted(unknown)}; known: {sorted(INPUTS)}")

    def register(fn: Callable[[MetricInputs], float]) -> Callable[[MetricInputs], float]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, frozenset(needs), goal, fn)
        return fn

    return register


def metric_goals(names: list[str] | tuple[str, ...], prefix: str = "") -> dict[str, str]:
    """{name: goal} of the registered metrics among `names` (each looked up without `prefix`) that have one."""
    goals = {}
    for name in names:
        item = METRICS.get(name.removeprefix(prefix))
        if item is not None and item.goal is not None:
            goals[name] = item.goal
    return goals


def _median_forecast(samples: Array | None, quantiles: Array | None, levels: Array | None) -> Array | None:
    if samples is not None:
        return np.median(samples, axis=-1)
    if quantiles is not None and levels is not None:
        match = np.flatnonzero(np.isclose(levels, 0.5))
        if match.size:
            return quantiles[..., match[0]]
    return None


def _array(values: ArrayLike | None) -> Array | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def metric_table(
    y_true: ArrayLike | None = None,
    y_pred: ArrayLike | None = None,
    *,
    samples: ArrayLike | None = None,
    quantiles: ArrayLike | None = None,
    levels: ArrayLike | None = None,
    y_train: ArrayLike | None = None,
    m: int = 1,
    reference: ArrayLike | None = None,
    threshold: float = 0.0,
    alpha: float = 0.05,
    labels: ArrayLike | None = None,
    predicted: ArrayLike | None = None,
    prob_up: ArrayLike | None = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Every registered metric (or those in `names`) that the inputs allow, by name, each a float (see the module
    docstring). Quantile forecasts need their levels."""
    if quantiles is not None and levels is None:
        raise ValueError("quantile forecasts need their levels")
    samples_, quantiles_, levels_ = _array(samples), _array(quantiles), _array(levels)
    point = _array(y_pred) if y_pred is not None else _median_forecast(samples_, quantiles_, levels_)
    inputs = MetricInputs(
        truth=_array(y_true),
        point=point,
        samples=samples_,
        quantiles=None if samples_ is not None else quantiles_,
        levels=levels_,
        y_train=_array(y_train),
        m=m,
        reference=reference,
        threshold=threshold,
        alpha=alpha,
        labels=None if labels is None else np.asarray(labels),
        predicted=None if predicted is None else np.asarray(predicted),
        prob_up=None if prob_up is None else np.asarray(prob_up, dtype=np.float64),
    )
    wanted = METRICS.values() if names is None else [METRICS[name] for name in names]
    return {item.name: float(item.fn(inputs)) for item in wanted if all(inputs.has(need) for need in item.needs)}


@metric("rmse", needs={"point"})
def _rmse(x: MetricInputs) -> float:
    return rmse(x.truth, x.point)


@metric("mae", needs={"point"})
def _mae(x: MetricInputs) -> float:
    return mae(x.truth, x.point)


@metric("mape", needs={"point"})
def _mape(x: MetricInputs) -> float:
    return mape(x.truth, x.point)


@metric("mase", needs={"point", "y_train"})
def _mase(x: MetricInputs) -> float:
    return mase(x.truth, x.point, x.y_train, x.m)


@metric("accuracy", needs={"classes"}, goal="max")
def _accuracy(x: MetricInputs) -> float:
    true, predicted = x.classes
    return float(np.mean(true == predicted))


@metric("directional_accuracy", needs={"directions", "point"}, goal="max")
def _directional_accuracy(x: MetricInputs) -> float:
    true, predicted = x.classes
    return float(np.mean(true == predicted))


def _class_score(label_up: bool, field: str) -> Callable[[MetricInputs], float]:
    def score(x: MetricInputs) -> float:
        true, predicted = x.classes
        up = 1
        down = 0 if x.labels is not None else -1
        return float(getattr(precision_recall_f1(true, predicted, up if label_up else down), field))

    return score


for _side, _up in (("up", True), ("down", False)):
    for _field in ("precision", "recall", "f1"):
        metric(f"{_field}_{_side}", needs={"directions"}, goal="max")(_class_score(_up, _field))


@metric("mcc", needs={"directions"}, goal="max")
def _mcc(x: MetricInputs) -> float:
    true, predicted = x.classes
    return mcc(true, predicted)


@metric("auc", needs={"probabilities"}, goal="max")
def _auc(x: MetricInputs) -> float:
    """Area under the ROC curve of `prob_up` for the 1 labels (NaN when the labels hold one class)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(x.labels)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, x.prob_up))


@metric("brier", needs={"probabilities"})
def _brier(x: MetricInputs) -> float:
    """Mean squared difference of `prob_up` and the 0 / 1 label."""
    return float(np.mean((x.prob_up - np.asarray(x.labels, dtype=np.float64)) ** 2))


@metric("crps", needs={"distribution"})
def _crps(x: MetricInputs) -> float:
    if x.samples is not None:
        return float(np.mean(crps_from_samples(x.truth, x.samples)))
    return float(np.mean(crps_from_quantiles(x.truth, x.quantiles, x.levels)))


@metric("mean_pinball", needs={"quantiles"})
def _mean_pinball(x: MetricInputs) -> float:
    return float(np.mean(pinball_loss(x.truth, x.quantiles, x.levels)))


@metric("coverage", needs={"interval"}, goal=None)
def _coverage(x: MetricInputs) -> float:
    return interval_coverage(x.truth, *x.interval)


@metric("msis", needs={"interval", "y_train"})
def _msis(x: MetricInputs) -> float:
    return msis(x.truth, *x.interval, x.alpha, x.y_train, x.m)
