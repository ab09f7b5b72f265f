"""Is forecast A better than forecast B? The Diebold-Mariano test and block-bootstrap intervals on per-point losses.

Both take two loss series of equal length [N] in time order (e.g. squared errors or CRPS per point of a test span,
one horizon at a time), and work on the loss differential d_t = loss_a[t] - loss_b[t]: negative means A is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

Alternative = Literal["two-sided", "less", "greater"]


@dataclass(frozen=True)
class DieboldMarianoResult:
    """Outcome of `diebold_mariano`. `mean_difference` is mean(loss_a - loss_b); `n` the number of points."""

    statistic: float
    p_value: float
    mean_difference: float
    n: int
    horizon: int
    alternative: Alternative
    variance: Literal["acf", "bartlett"]


def _differential(loss_a: ArrayLike, loss_b: ArrayLike) -> NDArray[np.float64]:
    a = np.asarray(loss_a, dtype=np.float64)
    b = np.asarray(loss_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"losses must be two 1-d series of equal length, got {a.shape} and {b.shape}")
    if a.size < 2:
        raise ValueError("a comparison needs at least two points")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("losses must be finite")
    return a - b


def _autocovariances(d: NDArray[np.float64], lags: int) -> NDArray[np.float64]:
    """gamma_k = 1/n sum_{t > k} (d_t - mean)(d_{t-k} - mean) for k = 0..lags."""
    centred = d - d.mean()
    n = d.size
    return np.array([centred[k:] @ centred[: n - k] / n for k in range(lags + 1)])


def long_run_variance(d: ArrayLike, lags: int, kernel: Literal["acf", "bartlett"] = "acf") -> float:
    """HAC estimate of the long-run variance of d [N]: gamma_0 + 2 sum_{k=1..lags} w_k gamma_k.

    "acf" (Diebold & Mariano 1995) uses w_k = 1 and can be negative; "bartlett" (Newey & West 1987) uses
    w_k = 1 - k / (lags + 1) and never is."""
    series = np.asarray(d, dtype=np.float64)
    lags = min(lags, series.size - 1)
    gamma = _autocovariances(series, lags)
    k = np.arange(1, lags + 1)
    weights = np.ones(lags) if kernel == "acf" else 1.0 - k / (lags + 1)
    return float(gamma[0] + 2.0 * weights @ gamma[1:])


def _p_value(statistic: float, alternative: Alternative, df: int | None) -> float:
    """P-value under Student's t with `df` degrees of freedom, or the standard normal when df is None."""
    dist = stats.norm() if df is None else stats.t(df=df)
    if alternative == "less":
        return float(dist.cdf(statistic))
    if alternative == "greater":
        return float(dist.sf(statistic))
    if alternative == "two-sided":
        return float(min(1.0, 2.0 * dist.sf(abs(statistic))))
    raise ValueError(f"unknown alternative {alternative!r}")


def diebold_mariano(
    loss_a: ArrayLike,
    loss_b: ArrayLike,
    horizon: int = 1,
    alternative: Alternative = "two-sided",
    hln: bool = True,
    variance: Literal["acf", "bartlett"] = "acf",
) -> DieboldMarianoResult:
    """Diebold-Mariano test of equal expected loss for two forecasts of the same points. loss_a, loss_b: [N].

    DM = mean(d) / sqrt(V / n), with d = loss_a - loss_b and V the long-run variance of d from its autocovariances
    up to lag horizon - 1 (an h-step forecast's errors are MA(h - 1)); `variance` picks the kernel (see
    `long_run_variance`). When the "acf" estimate is not positive the Bartlett one is used instead (it is
    reported in `variance`). With `hln` (Harvey, Leybourne & Newbold 1997) the statistic is multiplied by
    sqrt((n + 1 - 2h + h(h - 1)/n) / n) and compared with Student's t on n - 1 degrees of freedom; without it,
    with the standard normal.

    alternative: "two-sided" (the losses differ), "less" (A's expected loss is lower: A beats B) or "greater"
    (A's is higher). Identical losses (d = 0 everywhere) give statistic 0 (two-sided p-value 1); a constant
    non-zero d gives an infinite statistic."""
    d = _differential(loss_a, loss_b)
    n = d.size
    correction = (n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n
    if horizon < 1 or correction <= 0:
        raise ValueError(f"horizon must be >= 1 and small against n={n}, got {horizon}")
    mean = float(d.mean())
    used = variance
    long_run = long_run_variance(d, horizon - 1, variance)
    if long_run <= 0 and variance == "acf" and horizon > 1:
        used = "bartlett"
        long_run = long_run_variance(d, horizon - 1, used)
    if np.ptp(d) == 0 or long_run <= 0:
        statistic = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        statistic = mean / math.sqrt(long_run / n)
    if hln:
        statistic *= math.sqrt(correction)
    return DieboldMarianoResult(
        statistic=statistic,
        p_value=_p_value(statistic, alternative, n - 1 if hln else None),
        mean_difference=mean,
        n=n,
        horizon=horizon,
        alternative=alternative,
        variance=used,
    )


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile block-bootstrap interval for mean(loss_a - loss_b).

    For losses, A beats B when the whole interval lies below 0 (`a_beats_b`); B beats A when it lies above."""

    mean_difference: float
    lower: float
    upper: float
    confidence: float
    block_length: int
    n_resamples: int
    method: Literal["circular", "moving"]
    seed: int

    @property
    def a_beats_b(self) -> bool:
        return self.upper < 0

    @property
    def b_beats_a(self) -> bool:
        return self.lower > 0


def block_bootstrap_means(
    d: ArrayLike,
    block_length: int,
    n_resamples: int,
    method: Literal["circular", "moving"] = "circular",
    seed: int = 0,
) -> NDArray[np.float64]:
    """Means of `n_resamples` block-bootstrap resamples of d [N]; returns [n_resamples].

    Each resample joins ceil(N / L) blocks of L consecutive points with uniformly drawn starts and keeps the first
    N points. "moving" (Kuensch 1989) draws starts in 0..N-L; "circular" (Politis & Romano 1992) draws them in
    0..N-1 and wraps around the end, so every point is equally likely. Block sums come from prefix sums."""
    series = np.asarray(d, dtype=np.float64)
    n = series.size
    if not 1 <= block_length <= n:
        raise ValueError(f"block_length must lie in [1, {n}], got {block_length}")
    n_blocks = -(-n // block_length)
    last = n - (n_blocks - 1) * block_length
    rng = np.random.default_rng(seed)
    if method == "circular":
        starts = rng.integers(0, n, size=(n_resamples, n_blocks))
        extended = np.concatenate([series, series[:block_length]])
    elif method == "moving":
        starts = rng.integers(0, n - block_length + 1, size=(n_resamples, n_blocks))
        extended = series
    else:
        raise ValueError(f"unknown bootstrap method {method!r}")
    prefix = np.concatenate([[0.0], np.cumsum(extended)])
    lengths = np.full(n_blocks, block_length)
    lengths[-1] = last
    totals = (prefix[starts + lengths] - prefix[starts]).sum(axis=1)
    return totals / n


def block_bootstrap_ci(
    loss_a: ArrayLike,
    loss_b: ArrayLike,
    *,
    confidence: float = 0.95,
    block_length: int | None = None,
    n_resamples: int = 2000,
    method: Literal["circular", "moving"] = "circular",
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile confidence interval for mean(loss_a - loss_b) by the block bootstrap. loss_a, loss_b: [N].

    Blocks keep the serial dependence of the loss differential. block_length defaults to ceil(N^(1/3)); the same
    seed gives the same interval."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    d = _differential(loss_a, loss_b)
    length = block_length if block_length is not None else math.ceil(d.size ** (1 / 3))
    means = block_bootstrap_means(d, length, n_resamples, method, seed)
    tail = (1 - confidence) / 2
    lower, upper = np.quantile(means, [tail, 1 - tail])
    return BootstrapInterval(
        mean_difference=float(d.mean()),
        lower=float(lower),
        upper=float(upper),
        confidence=confidence,
        block_length=length,
        n_resamples=n_resamples,
        method=method,
        seed=seed,
    )
