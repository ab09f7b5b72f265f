"""Forecast metrics on numpy arrays: point errors, direction scores and probabilistic scoring rules.

Conventions (every function):
- Point forecasts and truths share one shape: [N] (one value per sample) or [N, H] (H horizon steps).
  Pass denormalised prices (or returns) — nothing here rescales.
- Samples put the sample axis last: [N, H, S] (or [N, S] for [N] truths). The same holds for quantiles:
  [N, H, Q] with levels [Q] in (0, 1).
- Training series for MASE/MSIS scales put time last: [T] (one scale for every row) or [N, T] (one per row).
- Scalar metrics return a Python float; scoring rules marked "per point" return an array so that a significance test
  can compare two forecasts point by point.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[Array, Array]:
    truth = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if truth.shape != pred.shape:
        raise ValueError(f"y_true has shape {truth.shape} but the forecast has shape {pred.shape}")
    if truth.size == 0:
        raise ValueError("metrics need at least one point")
    return truth, pred


def _with_last_axis(y_true: ArrayLike, forecast: ArrayLike, name: str) -> tuple[Array, Array]:
    truth = np.asarray(y_true, dtype=np.float64)
    values = np.asarray(forecast, dtype=np.float64)
    if values.shape[:-1] != truth.shape or values.shape[-1] == 0:
        raise ValueError(f"{name} must have shape {(*truth.shape, 'K')} with K >= 1, got {values.shape}")
    return truth, values


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error over all points. y_true, y_pred: [N] or [N, H]."""
    truth, pred = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((truth - pred) ** 2)))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error over all points. y_true, y_pred: [N] or [N, H]."""
    truth, pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(truth - pred)))


def mape(y_true: ArrayLike, y_pred: ArrayLike, eps: float = 0.0) -> float:
    """Mean absolute percentage error as a fraction (0.05 = 5%). y_true, y_pred: [N] or [N, H].

    Points with |y_true| <= eps are left out (a zero actual has no percentage error); NaN when none remain."""
    truth, pred = _pair(y_true, y_pred)
    keep = np.abs(truth) > eps
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs((truth[keep] - pred[keep]) / truth[keep])))


def seasonal_scale(y_train: ArrayLike, m: int = 1) -> Array:
    """Mean absolute error of the seasonal naive forecast (y[t] predicted by y[t - m]) in-sample.

    y_train: [T] -> scale [] (0-d array) or [N, T] -> scale [N]. Raises when T <= m or a scale is zero."""
    series = np.asarray(y_train, dtype=np.float64)
    if m < 1:
        raise ValueError(f"seasonality m must be >= 1, got {m}")
    if series.ndim not in (1, 2) or series.shape[-1] <= m:
        raise ValueError(f"y_train must be [T] or [N, T] with T > m={m}, got shape {series.shape}")
    scale = np.mean(np.abs(series[..., m:] - series[..., :-m]), axis=-1)
    if np.any(scale == 0):
        raise ValueError("the seasonal naive forecast is exact on the training series: the scale is zero")
    return scale


def _per_row(values: Array, scale: Array) -> Array:
    """Divide per-point `values` [N, ...] by `scale` ([] or [N]), aligning the scale with the first axis."""
    if scale.ndim == 1:
        if scale.shape[0] != values.shape[0]:
            raise ValueError(f"{scale.shape[0]} training series for {values.shape[0]} forecast rows")
        scale = scale.reshape(scale.shape + (1,) * (values.ndim - 1))
    return values / scale


def mase(y_true: ArrayLike, y_pred: ArrayLike, y_train: ArrayLike, m: int = 1) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006).

    Each absolute error is divided by the in-sample MAE of the seasonal naive forecast of its training series
    (`seasonal_scale`), then averaged. y_true, y_pred: [N] or [N, H]; y_train: [T] (shared) or [N, T] (per row)."""
    truth, pred = _pair(y_true, y_pred)
    return float(np.mean(_per_row(np.abs(truth - pred), seasonal_scale(y_train, m))))


def directions(values: ArrayLike, reference: ArrayLike | None = None, threshold: float = 0.0) -> NDArray[np.int8]:
    """Direction labels +1 (up), -1 (down), 0 (flat: |change| <= threshold), same shape as `values`.

    change = values - reference; `reference` broadcasts (e.g. the last observed price [N, 1] for price forecasts
    [N, H]); leave it None when `values` already are changes or returns."""
    change = np.asarray(values, dtype=np.float64)
    if reference is not None:
        change = change - np.asarray(reference, dtype=np.float64)
    labels = np.sign(change).astype(np.int8)
    labels[np.abs(change) <= threshold] = 0
    return labels


def directional_accuracy(
    y_true: ArrayLike, y_pred: ArrayLike, reference: ArrayLike | None = None, threshold: float = 0.0
) -> float:
    """Share of points whose forecast direction (up/down/flat, see `directions`) matches the true one.

    y_true, y_pred: [N] or [N, H]; the threshold applies to both."""
    truth, pred = _pair(y_true, y_pred)
    return float(np.mean(directions(truth, reference, threshold) == directions(pred, reference, threshold)))


class ClassScores(NamedTuple):
    """Precision, recall and F1 of one label, and its support (number of true points with that label)."""

    precision: float
    recall: float
    f1: float
    support: int


def precision_recall_f1(true_labels: ArrayLike, pred_labels: ArrayLike, label: int) -> ClassScores:
    """Precision, recall and F1 of `label` (e.g. +1 = up, -1 = down) from direction labels of equal shape.

    A ratio with a zero denominator (no predicted or no true points of the label) is 0.0, as in scikit-learn."""
    truth = np.asarray(true_labels).ravel()
    pred = np.asarray(pred_labels).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"{truth.size} true labels but {pred.size} predicted labels")
    true_pos = int(np.sum((pred == label) & (truth == label)))
    predicted = int(np.sum(pred == label))
    actual = int(np.sum(truth == label))
    precision = true_pos / predicted if predicted else 0.0
    recall = true_pos / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassScores(precision, recall, f1, actual)


def mcc(true_labels: ArrayLike, pred_labels: ArrayLike) -> float:
    """Matthews correlation coefficient; the multi-class form (Gorodkin 2004) for more than two labels.

    With C the confusion matrix, s = n points, c = trace, t_k / p_k the true / predicted counts of label k:
    MCC = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)). 0.0 when a factor is zero."""
    truth = np.asarray(true_labels).ravel()
    pred = np.asarray(pred_labels).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"{truth.size} true labels but {pred.size} predicted labels")
    labels, codes = np.unique(np.concatenate([truth, pred]), return_inverse=True)
    k = labels.size
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (codes[: truth.size], codes[truth.size :]), 1.0)
    s = float(truth.size)
    t = confusion.sum(axis=1)
    p = confusion.sum(axis=0)
    denominator = np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    if denominator == 0:
        return 0.0
    return float((np.trace(confusion) * s - p @ t) / denominator)


def crps_from_samples(y_true: ArrayLike, samples: ArrayLike) -> Array:
    """CRPS of the empirical distribution of the samples, per point. y_true: [N] or [N, H]; samples [..., S].

    Energy form CRPS = E|X - y| - 1/2 E|X - X'| with X, X' drawn from the S samples (the same estimator as
    properscoring.crps_ensemble). Sorting gives E|X - X'| = 2/S^2 sum_i (2i - S - 1) x_(i) for i = 1..S,
    so each point costs O(S log S). Returns an array with the shape of y_true."""
    truth, values = _with_last_axis(y_true, samples, "samples")
    s = values.shape[-1]
    ordered = np.sort(values, axis=-1)
    weights = 2.0 * np.arange(1, s + 1) - s - 1
    spread = ordered @ weights / s**2
    return np.mean(np.abs(values - truth[..., None]), axis=-1) - spread


def _levels(levels: ArrayLike, count: int) -> Array:
    taus = np.asarray(levels, dtype=np.float64)
    if taus.shape != (count,):
        raise ValueError(f"expected {count} quantile levels, got shape {taus.shape}")
    if np.any((taus <= 0) | (taus >= 1)):
        raise ValueError("quantile levels must lie strictly between 0 and 1")
    return taus


def pinball_loss(y_true: ArrayLike, quantiles: ArrayLike, levels: ArrayLike) -> Array:
    """Quantile (pinball) loss per point and level: rho_tau(y - q) = max(tau (y - q), (tau - 1)(y - q)).

    y_true: [N] or [N, H]; quantiles: [..., Q] forecasts at `levels` [Q]. Returns [..., Q]."""
    truth, values = _with_last_axis(y_true, quantiles, "quantiles")
    taus = _levels(levels, values.shape[-1])
    diff = truth[..., None] - values
    return np.maximum(taus * diff, (taus - 1.0) * diff)


def crps_from_quantiles(y_true: ArrayLike, quantiles: ArrayLike, levels: ArrayLike) -> Array:
    """CRPS approximated from Q quantile forecasts, per point: 2 * mean over levels of the pinball loss.

    CRPS(F, y) = 2 * integral over tau in (0, 1) of rho_tau(y - F^-1(tau)); averaging over the given levels is a
    Riemann sum of that integral. It converges to the CRPS for dense, evenly spaced levels (best the midpoints
    (k - 0.5) / Q); coarse grids (e.g. the 9 deciles) leave out the tails and so understate it, and uneven grids
    weight some levels more than the integral does. Compare models only on the same grid.
    y_true: [N] or [N, H]; quantiles [..., Q]; levels [Q]. Returns an array with the shape of y_true."""
    return 2.0 * np.mean(pinball_loss(y_true, quantiles, levels), axis=-1)


def _interval(y_true: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> tuple[Array, Array, Array]:
    truth, low = _pair(y_true, lower)
    _, high = _pair(y_true, upper)
    if np.any(low > high):
        raise ValueError("an interval has lower > upper")
    return truth, low, high


def interval_coverage(y_true: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of points with lower <= y <= upper. All three: [N] or [N, H]."""
    truth, low, high = _interval(y_true, lower, upper)
    return float(np.mean((truth >= low) & (truth <= high)))


def interval_score(y_true: ArrayLike, lower: ArrayLike, upper: ArrayLike, alpha: float) -> Array:
    """Interval score of a central (1 - alpha) interval per point (Gneiting & Raftery 2007):
    (u - l) + 2/alpha (l - y) 1{y < l} + 2/alpha (y - u) 1{y > u}. All three: [N] or [N, H]; returns that shape."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    truth, low, high = _interval(y_true, lower, upper)
    below = np.maximum(low - truth, 0.0)
    above = np.maximum(truth - high, 0.0)
    return (high - low) + 2.0 / alpha * (below + above)


def msis(y_true: ArrayLike, lower: ArrayLike, upper: ArrayLike, alpha: float, y_train: ArrayLike, m: int = 1) -> float:
    """Mean scaled interval score (M4 competition): the interval score divided by the in-sample MAE of the
    seasonal naive forecast of the training series (`seasonal_scale`), averaged over all points.

    y_true, lower, upper: [N] or [N, H]; y_train: [T] (shared) or [N, T] (per row); alpha = 0.05 for 95% intervals."""
    scores = interval_score(y_true, lower, upper, alpha)
    return float(np.mean(_per_row(scores, seasonal_scale(y_train, m))))


def sample_quantiles(samples: ArrayLike, levels: ArrayLike, axis: int = -1) -> Array:
    """Empirical quantiles of an ensemble along `axis` (the levels' axis comes first, as in `np.quantile`).

    Uses the Weibull plotting position (level p sits at order statistic p (S + 1), Hyndman & Fan type 6): for S
    draws from a continuous distribution, E[F(X_(k))] = k / (S + 1), so the interval between the alpha/2 and
    1 - alpha/2 quantiles covers about 1 - alpha of the distribution at any ensemble size (exactly where both fall
    on order statistics; 81.4% for 16 normal draws and a nominal 80%). numpy's default (linear, position
    p (S - 1) + 1) shrinks it: the same 16 calibrated draws cover 71.4%, which would blame the model for the size of
    its ensemble."""
    return np.quantile(np.asarray(samples, dtype=np.float64), levels, axis=axis, method="weibull")


def sample_interval(samples: ArrayLike, alpha: float) -> tuple[Array, Array]:
    """Central (1 - alpha) interval of samples [..., S]: the alpha/2 and 1 - alpha/2 quantiles of
    `sample_quantiles`, each [...]."""
    low, high = sample_quantiles(samples, [alpha / 2, 1 - alpha / 2])
    return low, high


def quantile_interval(quantiles: ArrayLike, levels: ArrayLike, alpha: float) -> tuple[Array, Array]:
    """Central (1 - alpha) interval read from quantile forecasts [..., Q] at `levels` [Q], which must include
    alpha/2 and 1 - alpha/2. Returns (lower, upper), each [...]."""
    values = np.asarray(quantiles, dtype=np.float64)
    taus = _levels(levels, values.shape[-1])
    picked = []
    for tau in (alpha / 2, 1 - alpha / 2):
        match = np.flatnonzero(np.isclose(taus, tau))
        if match.size == 0:
            raise ValueError(f"quantile level {tau:g} is needed for a {1 - alpha:.0%} interval but is not forecast")
        picked.append(values[..., match[0]])
    return picked[0], picked[1]
