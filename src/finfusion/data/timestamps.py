"""Parsing of user timestamps into UTC instants, and mapping of daily dates to session closes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from finfusion.data.calendar import US_PER_MINUTE, Frequency, SessionCalendar, from_us, to_us
from finfusion.data.validate import fail_at
from finfusion.errors import DataValidationError

#: Formats tried, in order, when no --date-format is given. Day-first dates are ambiguous and need --date-format.
NAIVE_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%Y%m%d",
)
#: The column holding the user's own text of a timestamp, so that messages quote it rather than a parsed value.
TS_TEXT = "__ts_text"
#: A date at midnight with a UTC offset (e.g. '2022-06-03 00:00:00+00:00'): in a daily file, that date's session.
MIDNIGHT_WITH_OFFSET = r"^(\d{4}-\d{2}-\d{2})[ T]00:00(?::00(?:\.0+)?)?(?:Z|[+-]\d{2}:?\d{2})$"
#: Numeric dates whose first two fields could be day or month.
SLASHED_DATE = r"^(\d{1,2})/(\d{1,2})/\d{4}"
AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")


def parse_instants(
    df: pl.DataFrame, column: str, *, tz: str, date_format: str | None, rename: Mapping[str, str]
) -> pl.Series:
    """The column as UTC instants (Datetime us UTC). Naive values are read in `tz`; values with an offset keep it.

    Raises on values that do not parse, naming the row and the user's column name.
    """
    series = df[column]
    if series.dtype == pl.String:
        text = series.str.strip_chars().str.replace(r"Z$", "+00:00")
        if not date_format:
            _refuse_ambiguous_order(df, text, column, rename)
        formats = [(date_format, False)] if date_format else _likely_formats(text)
        parsed = _parse_with(text, formats, tz)
        failed = parsed.is_null() & text.is_not_null()
        if failed.any() and not date_format:  # mixed formats: retry only the rows that failed, with every format
            every = [(f, False) for f in NAIVE_FORMATS] + [(f, True) for f in AWARE_FORMATS]
            parsed = parsed.scatter(failed.arg_true(), _parse_with(text.filter(failed), every, tz))
        hint = f"does not match the date format '{date_format}'" if date_format else "is not a date or timestamp"
        fail_at(
            df, parsed.is_null() & text.is_not_null(), column, "value {value} " + hint + " (see --date-format)", rename
        )
        series = parsed
    elif series.dtype == pl.Date:
        series = _localise(series.cast(pl.Datetime("us")), tz)
    elif isinstance(series.dtype, pl.Datetime):
        if series.dtype.time_zone is None:
            series = _localise(series, tz)
    else:
        raise DataValidationError(
            f"column has type {series.dtype}, expected dates or timestamps",
            file=df["_file"][0] if "_file" in df.columns and df.height else None,
            field=rename.get(column, column),
        )
    fail_at(df, series.is_null(), column, f"timestamp is missing (or does not exist in {tz})", rename)
    return series.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(column)


def _refuse_ambiguous_order(df: pl.DataFrame, text: pl.Series, column: str, rename: Mapping[str, str]) -> None:
    """Slashed dates (M/D/YYYY or D/M/YYYY) read without --date-format: refused unless some row's second field is
    above 12 (so the file is month-first); never guessed."""
    if not text.str.contains("/", literal=True).any():
        return
    fields = text.str.extract_groups(SLASHED_DATE)
    first, second = (fields.struct.field(name).cast(pl.Int32) for name in ("1", "2"))
    slashed = first.is_not_null()
    if not slashed.any() or (second > 12).any():
        return
    fail_at(
        df,
        slashed,
        column,
        "date {value}: day and month cannot be told apart (no day above 12 in the file); "
        "give --date-format %m/%d/%Y or %d/%m/%Y",
        rename,
    )


def session_dates(series: pl.Series) -> pl.Series:
    """A daily file's dates as written: midnight timestamps with an offset become their own date, never the previous
    day of another time zone (text, or a time-zone-aware column whose values are all midnight)."""
    if series.dtype == pl.String:
        text = series.str.strip_chars()
        if not (text.str.len_bytes() > 10).any():  # dates alone: nothing to rewrite
            return text.alias(series.name)
        return text.str.replace(MIDNIGHT_WITH_OFFSET, "${1}").alias(series.name)
    if isinstance(series.dtype, pl.Datetime) and series.dtype.time_zone is not None:
        local = series.dt.replace_time_zone(None)
        if (local.dt.truncate("1d") == local).all():
            return local.dt.date().alias(series.name)
    return series


def _likely_formats(text: pl.Series) -> list[tuple[str, bool]]:
    """The formats (and whether they carry an offset) that parse every one of the first non-null values."""
    sample = text.drop_nulls().head(200)
    candidates = [(f, False) for f in NAIVE_FORMATS] + [(f, True) for f in AWARE_FORMATS]
    for fmt, aware in candidates:
        dtype = pl.Datetime("us", "UTC") if aware else pl.Datetime("us")
        if sample.str.strptime(dtype, fmt, strict=False).null_count() == 0:
            return [(fmt, aware)]
    return candidates


def _parse_with(text: pl.Series, formats: list[tuple[str, bool]], tz: str) -> pl.Series:
    """Coalesce of the formats [N]: naive ones read in `tz`, offset-carrying ones converted; all UTC."""
    parsed = []
    for fmt, aware in formats:
        if aware:
            parsed.append(text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False))
        else:
            cache = "%H" not in fmt  # dates repeat across symbols; instants rarely do
            parsed.append(_localise(text.str.strptime(pl.Datetime("us"), fmt, strict=False, cache=cache), tz))
    return pl.select(pl.coalesce(parsed)).to_series()


def _localise(naive: pl.Series, tz: str) -> pl.Series:
    """Naive wall-clock times read in `tz`; times in a DST gap become null (and are reported by the caller)."""
    local = naive.dt.cast_time_unit("us").dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def daily_session_closes(
    df: pl.DataFrame, instants: pl.Series, calendar: SessionCalendar
) -> tuple[pl.Series, np.ndarray]:
    """Daily bars: the session close of each row's local date, and a mask [N] of dates that are not sessions."""
    local_dates = instants.dt.convert_time_zone(calendar.tz).dt.date().to_numpy().astype("datetime64[D]")
    idx, is_session = calendar.session_index_of_dates(local_dates)
    return from_us(calendar.closes[idx], "ts"), ~is_session


def intraday_bar_ends(
    instants: pl.Series, freq: Frequency, calendar: SessionCalendar, *, bar_label: str
) -> tuple[pl.Series, np.ndarray]:
    """Intraday bars: bar-end instants (shifted by one bar when labelled by start) and a mask [N] of bars outside
    every session."""
    ts_us = to_us(instants)
    if bar_label == "start":
        ts_us = ts_us + freq.minutes * US_PER_MINUTE  # type: ignore[operator]
    _, inside = calendar.session_of_bar_end(ts_us)
    return from_us(ts_us, "ts"), ~inside
