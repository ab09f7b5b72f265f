"""Position sizing: signals, scores and forecasts [T, A] -> target portfolio weights [T, A].

Every function works row by row on a [T, A] array (T bars, A assets) and uses only row t (and, for the volatility
based ones, returns up to and including row t), so a weight decided at the close of bar t never depends on later data.

Weights are fractions of portfolio equity: +0.1 is a long position worth 10% of equity, -0.1 a short one. They need not
sum to one; the rest is cash (negative cash is borrowing). Conventions shared by all functions:

* A row that is entirely NaN means "no decision at this bar": it stays NaN, and the backtester does not rebalance on it
  (positions drift). A NaN inside an otherwise valid row means "no position in that asset" (weight 0).
* Gross exposure is sum |w|, net exposure is sum w.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

Weighting = Literal["equal", "score"]


def _as_2d(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a [T, A] array, got shape {array.shape}")
    return array


def _empty_rows(array: np.ndarray) -> np.ndarray:
    """[T] bool: rows with no finite value at all."""
    return ~np.isfinite(array).any(axis=1)


def top_k_weights(scores: np.ndarray, k: int, *, weighting: Weighting = "equal", long_only: bool = False) -> np.ndarray:
    """Top-k long/short weights [T, A] from scores [T, A]: long the k highest scores, short the k lowest.

    Per row, only finite scores take part; with n of them, k_eff = min(k, n // 2) names go on each side (min(k, n) for
    `long_only`), so the two sides never overlap. Ties are broken by column order: among equal
    scores the lower column ranks higher (picked first for the long side, last for the short side).

    * `weighting="equal"`: each long gets +0.5 / k_eff and each short -0.5 / k_eff (gross 1, net 0).
    * `weighting="score"`: weights proportional to the distance from the row's median finite score m: longs
      0.5 * (s - m) / sum_longs (s - m), shorts -0.5 * (m - s) / sum_shorts (m - s) (gross 1, net 0); a side whose
      distances are all zero falls back to equal weights.
    * `long_only`: the k_eff highest get 1 / k_eff each, or with "score" max(s - m, 0)-proportional weights summing
      to 1 (names at or below the median get 0); nothing is shorted.

    All-NaN rows stay all-NaN (no decision); rows with too few finite scores for one name per side are all zero.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    s = _as_2d(scores, "scores")
    n_rows, n_assets = s.shape
    weights = np.zeros_like(s)
    valid = np.isfinite(s)
    n_valid = valid.sum(axis=1)
    k_eff = np.minimum(k, n_valid if long_only else n_valid // 2)
    # Rank by descending score, NaN last; stable, so equal scores keep column order.
    order = np.argsort(np.where(valid, -s, np.inf), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n_assets), s.shape), axis=1)
    long_mask = rank < k_eff[:, None]
    median = np.full((n_rows, 1), np.nan)
    rows = valid.any(axis=1)
    median[rows, 0] = np.nanmedian(s[rows], axis=1)
    long_share = 1.0 if long_only else 0.5
    weights += _side_weights(s, long_mask, median, weighting, long_share, sign=1.0)
    if not long_only:
        short_mask = (rank >= (n_valid - k_eff)[:, None]) & (rank < n_valid[:, None])
        weights += _side_weights(s, short_mask, median, weighting, 0.5, sign=-1.0)
    weights[_empty_rows(s)] = np.nan
    return weights


def _side_weights(
    scores: np.ndarray, mask: np.ndarray, median: np.ndarray, weighting: Weighting, share: float, sign: float
) -> np.ndarray:
    """[T, A] weights of one side (sign +1 long, -1 short) summing to sign * share on every row with members."""
    count = mask.sum(axis=1, keepdims=True)
    equal = np.where(mask, share / np.maximum(count, 1), 0.0)
    if weighting == "equal":
        return sign * equal
    if weighting != "score":
        raise ValueError(f"weighting must be 'equal' or 'score', got {weighting!r}")
    distance = np.where(mask, np.maximum(sign * (scores - median), 0.0), 0.0)
    total = distance.sum(axis=1, keepdims=True)
    proportional = np.divide(share * distance, total, out=np.zeros_like(distance), where=total > 0)
    return sign * np.where(total > 0, proportional, equal)


def top_k_abs_weights(scores: np.ndarray, k: int) -> np.ndarray:
    """Seed 002's `topk_long_short_abs` [T, A]: keep the k largest |score| per row, w = score / sum_topk |score|.

    The sign of a score is the side; gross exposure is 1 (unless every kept score is 0: then the row is zero). Ties in
    |score| are broken by column order. All-NaN rows stay all-NaN; NaN scores are never selected.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    s = _as_2d(scores, "scores")
    valid = np.isfinite(s)
    k_eff = np.minimum(k, valid.sum(axis=1))
    order = np.argsort(np.where(valid, -np.abs(s), np.inf), axis=1, kind="stable")
    keep = np.zeros_like(valid)
    np.put_along_axis(keep, order, np.arange(s.shape[1])[None, :] < k_eff[:, None], axis=1)
    kept = np.where(keep, s, 0.0)
    total = np.abs(kept).sum(axis=1, keepdims=True)
    weights = np.divide(kept, total, out=np.zeros_like(kept), where=total > 0)
    weights[_empty_rows(s)] = np.nan
    return weights


def fixed_fraction_weights(signals: np.ndarray, fraction: float) -> np.ndarray:
    """Fixed-fraction sizing [T, A]: w = fraction * sign(signal); zero or NaN signals give 0, all-NaN rows stay NaN."""
    s = _as_2d(signals, "signals")
    weights = fraction * np.sign(np.nan_to_num(s, nan=0.0))
    weights[_empty_rows(s)] = np.nan
    return weights


def kelly_weights(mean: np.ndarray, variance: np.ndarray, *, fraction: float = 0.5, cap: float = 1.0) -> np.ndarray:
    """Fractional Kelly sizing [T, A] from per-asset forecasts of next-period return mean and variance [T, A].

    w = clip(fraction * mean / variance, -cap, cap) per asset (the growth-optimal bet on one asset, scaled by
    `fraction`: 1 is full Kelly, 0.5 half Kelly, and capped at `cap` in absolute value). Assets with a non-finite
    forecast or a non-positive variance get 0; rows where every mean is NaN stay NaN.
    """
    mu = _as_2d(mean, "mean")
    var = _as_2d(variance, "variance")
    if mu.shape != var.shape:
        raise ValueError(f"mean {mu.shape} and variance {var.shape} must have the same shape")
    usable = np.isfinite(mu) & np.isfinite(var) & (var > 0)
    raw = np.divide(fraction * np.where(usable, mu, 0.0), var, out=np.zeros_like(mu), where=usable)
    weights = np.clip(raw, -cap, cap)
    weights[_empty_rows(mu)] = np.nan
    return weights


@njit(cache=True)
def _rolling_moments(values: np.ndarray, window: int, count: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """For every row t, over the finite values of rows t - window + 1 .. t per column: their count, mean and sample
    standard deviation (ddof 1; NaN below 2 values), written into the [T, A] outputs. Running sums of x and x ** 2
    (a value enters at its row and leaves `window` rows later), O(T * A); the sums restart at 0 whenever a window
    holds no finite value, and the variance is floored at 0."""
    n_bars, n_assets = values.shape
    n = np.zeros(n_assets)
    total = np.zeros(n_assets)
    squares = np.zeros(n_assets)
    for t in range(n_bars):
        for i in range(n_assets):
            x = values[t, i]
            if np.isfinite(x):
                n[i] += 1.0
                total[i] += x
                squares[i] += x * x
            if t >= window:
                y = values[t - window, i]
                if np.isfinite(y):
                    n[i] -= 1.0
                    total[i] -= y
                    squares[i] -= y * y
            if n[i] == 0.0:
                total[i] = 0.0
                squares[i] = 0.0
            count[t, i] = n[i]
            mean[t, i] = total[i] / n[i] if n[i] > 0 else np.nan
            if n[i] > 1:
                std[t, i] = np.sqrt(max(squares[i] - total[i] * total[i] / n[i], 0.0) / (n[i] - 1.0))
            else:
                std[t, i] = np.nan


def rolling_moments(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean, std) [T, A] of the finite values in rows t - window + 1 .. t (point-in-time at row t)."""
    v = _as_2d(values, "values")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    count, mean, std = np.empty(v.shape), np.empty(v.shape), np.empty(v.shape)
    _rolling_moments(v, window, count, mean, std)
    return count, mean, std


def trailing_vol(returns: np.ndarray, window: int, *, min_periods: int = 2) -> np.ndarray:
    """Point-in-time realised volatility per bar [T, A]: the sample standard deviation (ddof 1) of the finite returns
    in rows t - window + 1 .. t. Known at the close of bar t. NaN where fewer than `min_periods` finite returns exist.
    """
    if window < 2 or min_periods < 2:
        raise ValueError("window and min_periods must be at least 2")
    count, _, std = rolling_moments(returns, window)
    return np.where(count >= min_periods, std, np.nan)


def vol_target_weights(
    weights: np.ndarray,
    returns: np.ndarray,
    target_vol: float,
    *,
    window: int = 20,
    periods_per_year: int = 252,
    max_leverage: float = np.inf,
    per_asset: bool = False,
) -> np.ndarray:
    """Volatility targeting [T, A]: rescale weights so their trailing realised volatility hits `target_vol` (annual).

    * Portfolio level (default): at bar t the row w[t] is multiplied by
      min(target_vol / (sigma_p[t] * sqrt(periods_per_year)), max_leverage), where sigma_p[t] is the sample standard
      deviation of the returns w[t] would have earned over rows t - window + 1 .. t (NaN returns count as 0).
    * `per_asset`: each weight is scaled by target_vol / (trailing_vol(returns)[t] * sqrt(periods_per_year)), then the
      row is capped at gross `max_leverage`.

    Point-in-time: only returns up to and including bar t are used. Bars with fewer than `window` returns (or zero
    volatility) get weight 0; all-NaN rows stay NaN.
    """
    w = _as_2d(weights, "weights")
    r = _as_2d(returns, "returns")
    if w.shape != r.shape:
        raise ValueError(f"weights {w.shape} and returns {r.shape} must have the same shape")
    if window < 2:
        raise ValueError("window must be at least 2")
    annual = np.sqrt(periods_per_year)
    filled = np.nan_to_num(w, nan=0.0)
    if per_asset:
        sigma = trailing_vol(r, window, min_periods=window) * annual
        usable = np.isfinite(sigma) & (sigma > 0)
        scaled = np.divide(target_vol * filled, sigma, out=np.zeros_like(filled), where=usable)
        out = apply_limits(scaled, max_gross=max_leverage if np.isfinite(max_leverage) else None)
    else:
        sigma_p = np.full(w.shape[0], np.nan)
        if w.shape[0] >= window:
            windows = sliding_window_view(np.nan_to_num(r, nan=0.0), window, axis=0)  # [T - window + 1, A, window]
            hypothetical = np.einsum("taw,ta->tw", windows, filled[window - 1 :])
            sigma_p[window - 1 :] = hypothetical.std(axis=1, ddof=1) * annual
        usable = np.isfinite(sigma_p) & (sigma_p > 0)
        scale = np.minimum(np.divide(target_vol, sigma_p, out=np.zeros_like(sigma_p), where=usable), max_leverage)
        out = filled * scale[:, None]
    out[_empty_rows(w)] = np.nan
    return out


def apply_limits(weights: np.ndarray, *, max_gross: float | None = None, max_net: float | None = None) -> np.ndarray:
    """Scale each row [T, A] to satisfy the exposure limits; NaN entries stay NaN (they count as 0).

    1. Net cap: if |sum w| > max_net, the side in excess is scaled down (the longs when net is positive, the shorts when
       negative) by the factor that makes |net| exactly max_net; the other side is untouched.
    2. Gross cap: if sum |w| > max_gross, the whole row is scaled by max_gross / gross (net shrinks with it, so the net
       cap still holds).
    """
    w = _as_2d(weights, "weights").copy()
    if max_net is not None:
        if max_net < 0:
            raise ValueError(f"max_net must be >= 0, got {max_net}")
        filled = np.nan_to_num(w, nan=0.0)
        longs = np.where(filled > 0, filled, 0.0).sum(axis=1)
        shorts = -np.where(filled < 0, filled, 0.0).sum(axis=1)
        net = longs - shorts
        long_factor = np.divide(shorts + max_net, longs, out=np.ones_like(longs), where=net > max_net)
        short_factor = np.divide(longs + max_net, shorts, out=np.ones_like(shorts), where=net < -max_net)
        w = np.where(w > 0, w * long_factor[:, None], w * short_factor[:, None])
    if max_gross is not None:
        if max_gross < 0:
            raise ValueError(f"max_gross must be >= 0, got {max_gross}")
        gross = np.nansum(np.abs(w), axis=1)
        factor = np.divide(max_gross, gross, out=np.ones_like(gross), where=gross > max_gross)
        w = w * factor[:, None]
    return w
