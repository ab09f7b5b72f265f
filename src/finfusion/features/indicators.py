"""Window kernels and technical indicators on [S, L] grids: row = one symbol, column = bar position in time order.

Every function is causal along a row (column j depends on columns <= j of the same row only) and rows never mix, so a
value computed for a bar never sees a later bar or another symbol. NaN marks a missing value: a window that holds a
missing value (or reaches before `start`, the first column a series is defined at) is NaN, and a missing input of an
exponential average makes it NaN from there on.

The kernels are numpy over whole grids (prefix sums for windows, a blocked linear recurrence for exponential averages)
rather than per-symbol polars `.over` windows: a grid pass is one sweep over memory, while a windowed expression pays
a group-by and a scatter each, several times more at 500 x 2,520 bars (see benchmarks/features.py).
"""

from __future__ import annotations

import math

import numpy as np

#: Exponent budget of one block of the exponential-average recurrence: weights b**-i stay below e**300.
_MAX_EXPONENT = 300.0
#: A window variance below this fraction of the window's mean square (about the slab's anchor) is rounding noise.
_ZERO_VARIANCE = 1e-10
#: Columns served by one slab of `rolling_zscores`.
SLAB = 256


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """[S, L] the value k bars earlier (NaN for the first k bars)."""
    out = np.empty_like(x)
    k = min(k, x.shape[1])
    out[:, :k] = np.nan
    out[:, k:] = x[:, : x.shape[1] - k]
    return out


def diff(x: np.ndarray, k: int) -> np.ndarray:
    """[S, L] x_t - x_{t-k} (NaN for the first k bars)."""
    out = np.empty_like(x)
    k = min(k, x.shape[1])
    out[:, :k] = np.nan
    np.subtract(x[:, k:], x[:, : x.shape[1] - k], out=out[:, k:])
    return out


def divide_or_nan(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den (a new array), NaN where den is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    out[den == 0] = np.nan
    return out


class WindowSums:
    """Prefix sums of x[:, start:] along time: the sum over any trailing window in one subtraction.

    `x` [S, L]; values before column `start` are ignored. Each row is summed on its own, so no rounding crosses
    symbols.
    """

    def __init__(self, x: np.ndarray, start: int = 0) -> None:
        rows, length = x.shape
        self.shape = x.shape
        self.start = min(start, length)
        self.prefix = np.empty((rows, length - self.start + 1))
        self.prefix[:, 0] = 0.0
        np.cumsum(x[:, self.start :], axis=1, out=self.prefix[:, 1:])
        self.missing: np.ndarray | None = None
        if np.isnan(self.prefix[:, -1]).any():  # NaN (or inf - inf) anywhere in a row ends up in its last sum
            gaps = np.isnan(x[:, self.start :])
            np.cumsum(np.where(gaps, 0.0, x[:, self.start :]), axis=1, out=self.prefix[:, 1:])
            self.missing = np.zeros_like(self.prefix)
            np.cumsum(gaps, axis=1, out=self.missing[:, 1:])

    def sum(self, window: int) -> np.ndarray:
        """[S, L] sum of the last `window` values; NaN before column start + window - 1 or when one is missing."""
        out = np.empty(self.shape)
        first = min(self.start + window - 1, self.shape[1])
        out[:, :first] = np.nan
        np.subtract(self.prefix[:, window:], self.prefix[:, :-window], out=out[:, first:])
        if self.missing is not None:
            gaps = self.missing[:, window:] - self.missing[:, :-window]
            out[:, first:][gaps > 0] = np.nan
        return out


def _prefix(values: np.ndarray) -> np.ndarray:
    """[S, W + 1] cumulative sums along time with a leading zero column."""
    out = np.empty((values.shape[0], values.shape[1] + 1))
    out[:, 0] = 0.0
    np.cumsum(values, axis=1, out=out[:, 1:])
    return out


def rolling_zscores(
    x: np.ndarray, windows: tuple[int, ...] | list[int], ddof: int = 1, start: int = 0
) -> dict[int, np.ndarray]:
    """{window: [S, L] (x - trailing mean) / trailing std over `window` bars} of x[:, start:].

    The std has `ddof` delta degrees of freedom; NaN while a window fills, where one holds a missing value, and where
    the std is 0. Columns are served slab by slab: the slab serving columns [lo, lo + SLAB) starts max(windows) - 1
    columns earlier and its prefix sums of x and x**2 are taken about its first value, which every column it serves
    already knows. Sums so restart every few hundred bars at the scale of nearby values: the variance of a price level
    stays exact to about 1e-12 however far the price drifted from where the series began.
    """
    out = {w: np.full(x.shape, np.nan) for w in windows}
    reach = max(windows) - 1
    for lo in range(start, x.shape[1], SLAB):
        first = max(start, lo - reach)
        _zscores_of_slab(x[:, first : lo + SLAB], first, lo, ddof, out)
    return out


def _zscores_of_slab(slab: np.ndarray, first: int, lo: int, ddof: int, out: dict[int, np.ndarray]) -> None:
    """Fill columns lo .. first + W - 1 of every out[window] from the slab [S, W] of columns first .. first + W - 1."""
    hi = first + slab.shape[1]
    centred = slab - np.nan_to_num(slab[:, :1])
    sums, squares = _prefix(centred), _prefix(centred * centred)
    gaps = None
    if np.isnan(sums[:, -1]).any():  # a missing value: count them, sum the rest
        missing = np.isnan(centred)
        centred[missing] = 0.0
        sums, squares, gaps = _prefix(centred), _prefix(centred * centred), _prefix(missing)
    for w, z in out.items():
        begin = max(lo, first + w - 1)
        if begin >= hi:
            continue
        ends, starts = slice(begin - first + 1, hi - first + 1), slice(begin - first + 1 - w, hi - first + 1 - w)
        # z = (w x - S1) / sqrt((w S2 - S1**2) * w / (w - ddof)) with S1, S2 the window sums of x and x**2
        s1 = sums[:, ends] - sums[:, starts]
        spread = squares[:, ends] - squares[:, starts]
        spread *= w
        floor = spread * _ZERO_VARIANCE
        spread -= s1 * s1
        zero = spread <= floor
        spread *= w / (w - ddof)
        target = z[:, begin:hi]
        with np.errstate(divide="ignore", invalid="ignore"):
            np.sqrt(spread, out=spread)
            np.multiply(centred[:, begin - first :], w, out=target)
            target -= s1
            target /= spread
        target[zero] = np.nan
        if gaps is not None:
            target[gaps[:, ends] - gaps[:, starts] > 0] = np.nan


def ewm(x: np.ndarray, alpha: float, start: int = 0, min_samples: int = 1) -> np.ndarray:
    """[S, L] exponential moving average y_t = (1 - alpha) y_{t-1} + alpha x_t started at y_start = x_start.

    The recursive form (pandas `ewm(adjust=False)`); NaN before column start + min_samples - 1.
    """
    if start >= x.shape[1]:
        return np.full(x.shape, np.nan)
    u = alpha * x
    u[:, start] = x[:, start]
    return _from_column(u, start, 1.0 - alpha, start + min_samples - 1)


def wilder(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """[S, L] Wilder's smoothing: the mean of the first n values (columns start .. start + n - 1), then
    y_t = y_{t-1} + (x_t - y_{t-1}) / n. NaN before column start + n - 1."""
    seed = start + n - 1
    if seed >= x.shape[1]:
        return np.full(x.shape, np.nan)
    u = x / n
    u[:, seed] = np.mean(x[:, start : seed + 1], axis=1)
    return _from_column(u, seed, 1.0 - 1.0 / n, seed)


def _from_column(u: np.ndarray, start: int, b: float, first_valid: int) -> np.ndarray:
    """y = linear_recurrence(u[:, start:], b) in place of u; NaN before column `first_valid`."""
    linear_recurrence(u[:, start:], b)
    u[:, : min(first_valid, u.shape[1])] = np.nan
    return u


def linear_recurrence(u: np.ndarray, b: float) -> np.ndarray:
    """[S, M] y with y_0 = u_0 and y_t = b y_{t-1} + u_t along each row, for 0 <= b < 1 (u is overwritten).

    Blocked closed form: inside a block y_i = b**i * cumsum(u_j * b**-j) + b**(i+1) * (state before the block), with
    blocks short enough that b**-i stays finite; a loop over the (few) blocks carries each row's state.
    """
    length = u.shape[1]
    if b == 0.0 or length == 0:
        return u
    block = max(1, min(length, int(_MAX_EXPONENT / -math.log(b))))
    powers = b ** np.arange(block + 1, dtype=np.float64)
    for lo in range(0, length, block):
        part = u[:, lo : lo + block]
        width = part.shape[1]
        part /= powers[:width]
        np.cumsum(part, axis=1, out=part)
        part *= powers[:width]
        if lo:
            part += u[:, lo - 1 : lo] * powers[1 : width + 1]
    return u


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """[S, L] max(high, previous close) - min(low, previous close); the first bar's is high - low.

    The close takes part too, so a bar without high or low still has a range (|close - previous close|).
    """
    prev = shift(close, 1)
    return np.fmax(np.fmax(high, close), prev) - np.fmin(np.fmin(low, close), prev)


def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """[S, L] Wilder's relative strength index in [0, 100] from bar-to-bar close changes; NaN for the first n bars
    and where the close did not move at all over the average."""
    change = diff(close, 1)
    up = np.maximum(change, 0.0)
    gain = wilder(up, n, start=1)
    loss = wilder(up - change, n, start=1)
    out = divide_or_nan(gain, gain + loss)
    out *= 100.0
    return out


def macd(x: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([S, L] MACD line, signal line, histogram) of x: EMA(fast) - EMA(slow), its EMA(signal), and their difference.

    EMAs of span s use alpha = 2 / (s + 1) and report once s values went in (line from column slow - 1, signal from
    column slow + signal - 2).
    """
    line = ewm(x, 2.0 / (fast + 1), min_samples=fast)
    line -= ewm(x, 2.0 / (slow + 1), min_samples=slow)
    sig = ewm(line, 2.0 / (signal + 1), start=slow - 1, min_samples=signal)
    return line, sig, line - sig


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """[S, L] Wilder's average true range (price units); NaN for the first n - 1 bars."""
    return wilder(true_range(high, low, close), n)


def bollinger_pct_b(x: np.ndarray, window: int = 20, width: float = 2.0) -> np.ndarray:
    """[S, L] Bollinger %B of x, where x sits between the bands mean -/+ width * std (population std over `window`
    bars): 0 on the lower band, 1 on the upper. NaN while the window fills and when the std is 0."""
    out = rolling_zscores(x, [window], ddof=0)[window]
    out /= 2.0 * width
    out += 0.5
    return out


def ma_ratio(close: np.ndarray, window: int, sums: WindowSums | None = None) -> np.ndarray:
    """[S, L] close / simple moving average over `window` bars - 1 (`sums`: prefix sums of close, to share)."""
    out = close / ((sums or WindowSums(close)).sum(window) / window)
    out -= 1.0
    return out
