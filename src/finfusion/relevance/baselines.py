"""Baselines of the relevance family, on the same samples and features as the dual-tower model.

Score baselines (compared in MSE and correlation with the [-1, 1] label, and in direction through their sign):
- `zero`: the score 0 (no relevance); it has no sign, so it is never compared in direction accuracy;
- `ridge`: ridge regression of each horizon's label on the concatenated context and stock vectors, the penalty
  chosen among `RIDGE_ALPHAS` on the validation MSE (scikit-learn);
- `lightgbm`: a gradient-boosted tree regressor per horizon on the same vectors, its number of trees chosen by early
  stopping on the validation samples.

Direction baselines (compared in direction accuracy only):
- `majority_class`: each horizon's more frequent training direction;
- `previous_sign`: the sign of the stock's own return over the h days up to the decision instant.

Each baseline gives `score` [N, K] (NaN for direction-only baselines) and `up` [N, K] bool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from finfusion.errors import FinfusionError
from finfusion.samples.contract import CONTEXT, DIRECTION, LABEL_MASK, PAST_RETURN, RELEVANCE, STOCK

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
SCORE_BASELINES = ("zero", "ridge", "lightgbm")
DIRECTION_BASELINES = ("majority_class", "previous_sign")


@dataclass(frozen=True)
class BaselineOutputs:
    """`score` [N, K] (NaN when the baseline has none), `up` [N, K] (None when it has no direction), `note`."""

    score: np.ndarray
    up: np.ndarray | None
    note: str = ""


def features(dataset: object) -> np.ndarray:
    """[N, Fc + Fs] the concatenated context and stock vectors of relevance samples (TensorSamples)."""
    return np.concatenate([dataset.column(CONTEXT), dataset.column(STOCK)], axis=1).astype(np.float64)


def baseline_outputs(
    names: Sequence[str], train: object, val: object, test: object, seed: int = 0
) -> dict[str, BaselineOutputs]:
    """Each named baseline fitted on `train` (choices on `val`) and applied to `test`."""
    unknown = sorted(set(names) - {*SCORE_BASELINES, *DIRECTION_BASELINES})
    if unknown:
        known = ", ".join((*SCORE_BASELINES, *DIRECTION_BASELINES))
        raise FinfusionError(f"evaluation.baselines: unknown baseline(s) {', '.join(unknown)}; known: {known}")
    n, k = len(test), test.column(RELEVANCE).shape[1]
    out: dict[str, BaselineOutputs] = {}
    for name in names:
        if name == "zero":
            out[name] = BaselineOutputs(np.zeros((n, k)), None)
        elif name == "ridge":
            out[name] = _ridge(train, val, test)
        elif name == "lightgbm":
            out[name] = _lightgbm(train, val, test, seed)
        elif name == "majority_class":
            known = train.column(LABEL_MASK)
            up = [(train.column(DIRECTION)[:, j][known[:, j]].mean() >= 0.5) for j in range(k)]
            out[name] = BaselineOutputs(np.full((n, k), np.nan), np.tile(np.asarray(up), (n, 1)))
        else:
            out[name] = BaselineOutputs(np.full((n, k), np.nan), test.column(PAST_RETURN) > 0)
    return out


def _labels(dataset: object, j: int) -> tuple[np.ndarray, np.ndarray]:
    known = dataset.column(LABEL_MASK)[:, j]
    return features(dataset)[known], dataset.column(RELEVANCE)[known, j].astype(np.float64)


def _ridge(train: object, val: object, test: object) -> BaselineOutputs:
    from sklearn.linear_model import Ridge

    k = train.column(RELEVANCE).shape[1]
    score, chosen = np.zeros((len(test), k)), []
    for j in range(k):
        x, y = _labels(train, j)
        xv, yv = _labels(val, j)
        fits = [Ridge(alpha=alpha).fit(x, y) for alpha in RIDGE_ALPHAS]
        best = int(np.argmin([np.mean((fit.predict(xv) - yv) ** 2) for fit in fits]))
        chosen.append(RIDGE_ALPHAS[best])
        score[:, j] = np.clip(fits[best].predict(features(test)), -1.0, 1.0)
    return BaselineOutputs(score, score > 0, f"alpha {chosen} (validation MSE)")


def _lightgbm(train: object, val: object, test: object, seed: int) -> BaselineOutputs:
    import lightgbm

    k = train.column(RELEVANCE).shape[1]
    score, trees = np.zeros((len(test), k)), []
    for j in range(k):
        x, y = _labels(train, j)
        xv, yv = _labels(val, j)
        model = lightgbm.LGBMRegressor(
            n_estimators=500, learning_rate=0.03, num_leaves=15, min_child_samples=40, subsample=0.8,
            subsample_freq=1, colsample_bytree=0.8, random_state=seed, n_jobs=2, verbose=-1,
        )  # fmt: skip
        model.fit(x, y, eval_set=[(xv, yv)], callbacks=[lightgbm.early_stopping(30, verbose=False)])
        trees.append(int(model.best_iteration_ or model.n_estimators))
        score[:, j] = np.clip(model.predict(features(test)), -1.0, 1.0)
    return BaselineOutputs(score, score > 0, f"trees {trees} (early stopping on validation)")
