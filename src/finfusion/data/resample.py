"""Session-respecting resampling of bars to a coarser frequency.

Bins are anchored at each session's open, so no output bar ever mixes bars of two sessions. With `step` the target
frequency in microseconds, a bar ending at `ts` in session s (open < ts <= close) falls in bin
`k = ceil((ts - open) / step)`, whose end is `min(open + k * step, close)`: the last bin of a session (a half day's
included) ends at the session's close. For the daily frequency the bin is the whole session and ends at its close.

Because a bin ending at `end` only holds bars with `ts <= end`, a resampled bar is known at its own `ts`: resampling is
point-in-time by construction.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from finfusion.data.calendar import US_PER_MINUTE, Frequency, SessionCalendar, from_us, parse_freq, to_us
from finfusion.data.schema import BARS
from finfusion.errors import DataValidationError, FinfusionError

__all__ = ["bin_ends", "check_resample_freqs", "resample_bars"]

_BIN = "__bin_us"
_TS_US = "__ts_us"


def check_resample_freqs(from_freq: Frequency, to_freq: Frequency) -> None:
    """Raise `FinfusionError` unless bars of `from_freq` can be aggregated into bars of `to_freq`.

    The target must be daily, or intraday and a whole multiple (1 included) of an intraday source.
    """
    what = f"cannot resample {from_freq.label} bars to {to_freq.label}"
    if from_freq.is_daily:
        if not to_freq.is_daily:
            raise FinfusionError(f"{what}: the target frequency is finer than the source")
        return
    if to_freq.is_daily:
        return
    assert from_freq.minutes is not None and to_freq.minutes is not None
    if to_freq.minutes < from_freq.minutes:
        raise FinfusionError(f"{what}: the target frequency is finer than the source")
    if to_freq.minutes % from_freq.minutes:
        raise FinfusionError(
            f"{what}: {to_freq.minutes} minutes is not a multiple of "
            f"{from_freq.minutes} minutes, so source bars would straddle target bins"
        )


def bin_ends(ts_us: np.ndarray, calendar: SessionCalendar, freq: Frequency) -> tuple[np.ndarray, np.ndarray]:
    """Session-anchored bin ends for bar-end instants.

    Args:
        ts_us: bar-end instants [N], int64 microseconds UTC.
        calendar: the exchange's sessions.
        freq: the target frequency.

    Returns:
        (bin end [N] int64 microseconds UTC, inside [N] bool). Where `inside` is False the bar ends outside every
        session (not in (open, close]) and its bin end is meaningless.
    """
    ts_us = np.asarray(ts_us, dtype=np.int64)
    sess, inside = calendar.session_of_bar_end(ts_us)
    open_us = calendar.opens[sess]
    close_us = calendar.closes[sess]
    if freq.is_daily:
        return close_us.copy(), inside
    assert freq.minutes is not None
    step = np.int64(freq.minutes * US_PER_MINUTE)
    k = (ts_us - open_us + step - 1) // step
    return np.minimum(open_us + k * step, close_us), inside


def _ts_as_utc(bars: pl.DataFrame) -> pl.Series:
    """The `ts` column as a UTC datetime Series, or DataValidationError naming the first bad row."""
    ts = bars.get_column("ts")
    if not isinstance(ts.dtype, pl.Datetime):
        raise DataValidationError(f"bar end must be a UTC datetime, got {ts.dtype}", field="ts")
    if ts.dtype.time_zone not in (None, "UTC"):
        ts = ts.dt.convert_time_zone("UTC")
    if ts.null_count():
        first = int(ts.is_null().arg_true()[0])
        raise DataValidationError("bar end is missing", row=first + 1, field="ts")
    return ts


def _is_sorted(frame: pl.DataFrame) -> bool:
    """Whether `frame` [N rows] is sorted by (symbol, ts) (null symbols aside, which force the general path)."""
    sym, prev_sym = pl.col("symbol"), pl.col("symbol").shift()
    ts, prev_ts = pl.col(_TS_US), pl.col(_TS_US).shift()
    ordered = (sym > prev_sym) | ((sym == prev_sym) & (ts >= prev_ts))
    return bool(frame.select(ordered.slice(1).all(ignore_nulls=False)).item()) if frame.height > 1 else True


def _aggregations(columns: list[str]) -> tuple[list[pl.Expr], list[pl.Expr], list[str]]:
    """Per-bin aggregations of the BARS columns present, the post-fixes of nullable ones, and helper columns."""
    every = {
        "open": pl.col("open").first(ignore_nulls=True),
        "high": pl.col("high").max(),
        "low": pl.col("low").min(),
        "close": pl.col("close").last(ignore_nulls=True),
    }
    aggs: list[pl.Expr] = [expr for name, expr in every.items() if name in columns]
    fixes: list[pl.Expr] = []
    helpers: list[str] = []
    if "volume" in columns:
        aggs += [pl.col("volume").sum(), pl.col("volume").count().alias("__n_volume")]
        fixes.append(pl.when(pl.col("__n_volume") > 0).then(pl.col("volume")).alias("volume"))
        helpers.append("__n_volume")
    for name in ("adj_close", "adj_factor"):
        if name in columns:
            aggs.append(pl.col(name).last(ignore_nulls=True))
    if "label" in columns:  # the user's class of one bar says nothing of a coarser bar's
        aggs.append(pl.lit(None, dtype=pl.Int64).alias("label"))
    for name, how in (("filled", "all"), ("volume_anomaly", "any")):
        if name in columns:
            count = f"__n_{name}"
            aggs.append(getattr(pl.col(name), how)(ignore_nulls=True))
            aggs.append(pl.col(name).count().alias(count))
            fixes.append(pl.when(pl.col(count) > 0).then(pl.col(name)).alias(name))
            helpers.append(count)
    return aggs, fixes, helpers


def resample_bars(
    bars: pl.DataFrame,
    calendar: SessionCalendar,
    to_freq: str,
    *,
    from_freq: str | None = None,
) -> pl.DataFrame:
    """Aggregate bars [N rows, BARS columns] to a coarser frequency without crossing session boundaries.

    Args:
        bars: canonical bars [N rows]: symbol, ts (bar end, UTC), open, high, low, close, volume, and optionally
            adj_close, adj_factor, filled, volume_anomaly, label. Any order; columns outside the BARS schema are
            dropped.
        calendar: the sessions the bars trade in.
        to_freq: target frequency such as '5m', '30m', '1h' or '1d' (one bar per session, ending at its close).
        from_freq: the bars' frequency; when given, the target must be a whole multiple of it (or daily).

    Returns:
        Bars [M rows, same BARS columns in BARS order], M <= N, sorted by (symbol, ts). Per (symbol, bin):
        open = first non-null, high = max, low = min, close = last non-null, volume = sum, adj_close and adj_factor =
        last non-null, filled = all (a bin is filled only when all its bars were synthetic), volume_anomaly = any,
        label = null (a bar's label is not one of the coarser bar). Nulls are skipped; a bin whose values of a
        column are all null gets null.

    Raises:
        DataValidationError: a required column is missing, or a bar ends outside every session (names the first such
            row, 1-based in `bars`, and field 'ts').
        FinfusionError: unknown frequency, or a target finer than / not a multiple of `from_freq`.
    """
    target = parse_freq(to_freq)
    if from_freq is not None:
        check_resample_freqs(parse_freq(from_freq), target)
    for col in BARS.columns:
        if col.required and col.name not in bars.columns:
            raise DataValidationError("required column is missing", field=col.name)
    columns = [c.name for c in BARS.columns if c.name in bars.columns]
    dtypes = {c.name: c.dtype for c in BARS.columns}
    casts = [pl.col(name).cast(dtypes[name]) for name in columns]

    ts = _ts_as_utc(bars)
    ts_us = to_us(ts) if bars.height else np.empty(0, dtype=np.int64)
    bin_us, inside = bin_ends(ts_us, calendar, target)
    if not inside.all():
        first = int(np.argmin(inside))
        raise DataValidationError(
            f"bar end {ts[first]} is outside every {calendar.name} session (a bar must end in (open, close])",
            row=first + 1,
            field="ts",
        )

    aggs, fixes, helpers = _aggregations(columns)
    frame = bars.select(columns).with_columns(
        pl.Series(_TS_US, ts_us, dtype=pl.Int64),
        pl.Series(_BIN, bin_us, dtype=pl.Int64),
    )
    if _is_sorted(frame):
        # Within a symbol bins increase with ts, so groups come out in (symbol, bin) order and rows within a group in
        # ts order, which is what first/last need.
        grouped = frame.group_by("symbol", _BIN, maintain_order=True).agg(aggs)
    else:
        # Sorting by the int64 ts alone is much cheaper than by (symbol, ts); group_by keeps each group's rows in
        # input order, so first/last still see them in ts order. Only the (smaller) output needs the full sort.
        grouped = frame.sort(_TS_US, maintain_order=True).group_by("symbol", _BIN).agg(aggs).sort("symbol", _BIN)
    out = grouped.with_columns(fixes).drop(helpers)
    out = out.with_columns(from_us(out.get_column(_BIN).to_numpy(), "ts"))
    return out.select(columns).with_columns(casts)
