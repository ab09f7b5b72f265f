"""Parsing of user timestamps into UTC instants, and mapping of daily dates to session closes."""

from __future__ import annotations

from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import polars as pl

from finfusion.data.calendar import US_PER_MINUTE, Frequency, SessionCalendar, from_us, to_us
from finfusion.data.schema import SOURCE_FILE
from finfusion.data.validate import fail_at
from finfusion.data.zone_abbreviations import has_abbreviation, parse_abbreviated, refuse_without_zone
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
    df: pl.DataFrame,
    column: str,
    *,
    tz: str | None,
    date_format: str | None,
    rename: Mapping[str, str],
    default_tz: str = "UTC",
) -> pl.Series:
    """The column as UTC instants (Datetime us UTC). Naive values are read in `tz` (`default_tz` when None), values
    with an offset keep it, and with a `%Z` date format each value's zone abbreviation is checked against `tz`, which
    must then be given (zone_abbreviations.py).

    Raises on values that do not parse and on local times that the clocks skip or repeat at a DST change (unless an
    abbreviation tells which), naming the row and the user's column name.
    """
    series = df[column]
    if has_abbreviation(date_format) and tz is None:
        refuse_without_zone(str(date_format), _first_file(df), rename.get(column, column))
    zone = tz or default_tz
    if series.dtype == pl.String and has_abbreviation(date_format):
        series = parse_abbreviated(df, column, tz=zone, date_format=str(date_format), rename=rename)
    elif series.dtype == pl.String:
        text = series.str.strip_chars().str.replace(r"Z$", "+00:00")
        if not date_format:
            _refuse_ambiguous_order(df, text, column, rename)
        formats = [(date_format, False)] if date_format else _likely_formats(text)
        naive, aware = _parse_with(text, formats)
        failed = naive.is_null() & aware.is_null() & text.is_not_null()
        if failed.any() and not date_format:  # mixed formats: retry only the rows that failed, with every format
            every = [(f, False) for f in NAIVE_FORMATS] + [(f, True) for f in AWARE_FORMATS]
            rows = failed.arg_true()
            retried = _parse_with(text.filter(failed), every)
            naive, aware = naive.scatter(rows, retried[0]), aware.scatter(rows, retried[1])
        hint = f"does not match the date format '{date_format}'" if date_format else "is not a date or timestamp"
        fail_at(
            df,
            naive.is_null() & aware.is_null() & text.is_not_null(),
            column,
            "value {value} " + hint + " (see --date-format)",
            rename,
        )
        local = _localise(df, naive, zone, column, rename)
        series = local if aware.null_count() == aware.len() else local.fill_null(aware)
    elif series.dtype == pl.Date:
        series = _localise(df, series.cast(pl.Datetime("us")), zone, column, rename)
    elif isinstance(series.dtype, pl.Datetime):
        if series.dtype.time_zone is None:
            series = _localise(df, series, zone, column, rename)
    else:
        raise DataValidationError(
            f"column has type {series.dtype}, expected dates or timestamps",
            file=_first_file(df),
            field=rename.get(column, column),
        )
    fail_at(df, series.is_null(), column, "timestamp is missing", rename)
    return series.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(column)


def check_zone(name: str) -> str:
    """`name` when it is a time zone of the IANA database (e.g. America/New_York); raises otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DataValidationError(
            f"time zone '{name}' is not in the IANA time zone database (e.g. America/New_York, Europe/London, UTC)"
        ) from exc
    return name


def _first_file(df: pl.DataFrame) -> str | None:
    return df[SOURCE_FILE][0] if SOURCE_FILE in df.columns and df.height else None


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


def _parse_with(text: pl.Series, formats: list[tuple[str, bool]]) -> tuple[pl.Series, pl.Series]:
    """(naive wall-clock times [N], instants with an offset [N] in UTC): per row the first of `formats` that parses
    it, naive or with an offset as that format reads it (a given format with %z reads offsets)."""
    naive, aware = [], []
    for fmt, with_offset in formats:
        if with_offset:
            aware.append(text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False))
            continue
        cache = "%H" not in fmt  # dates repeat across symbols; instants rarely do
        parsed = text.str.strptime(pl.Datetime("us"), fmt, strict=False, cache=cache)
        (aware if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone else naive).append(parsed)
    in_utc = [a.dt.convert_time_zone("UTC") for a in aware]
    length = text.len()
    return _first_parsed(naive, length, pl.Datetime("us")), _first_parsed(in_utc, length, pl.Datetime("us", "UTC"))


def _first_parsed(parsed: list[pl.Series], length: int, dtype: pl.DataType) -> pl.Series:
    """Per row the first non-null of `parsed` [N] (all null without any)."""
    if not parsed:
        return pl.repeat(None, length, dtype=dtype, eager=True)
    return parsed[0] if len(parsed) == 1 else pl.select(pl.coalesce(parsed)).to_series()


def _localise(df: pl.DataFrame, naive: pl.Series, tz: str, column: str, rename: Mapping[str, str]) -> pl.Series:
    """Naive wall-clock times [N] read in `tz`, as UTC instants. A local time that the clocks skip (a DST gap) or
    repeat (the hour when they go back) is refused, naming its row, never guessed."""
    local = naive.dt.cast_time_unit("us").dt.replace_time_zone(tz, ambiguous="null", non_existent="null")
    if local.null_count() > naive.null_count():  # the first such row: skipped, or repeated
        unresolved = local.is_null() & naive.is_not_null()
        first = naive.filter(unresolved).head(1)
        skipped = first.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").is_null().all()
        message = (
            f"local time {{value}} does not exist in {tz} (the clocks skip it at a DST change)"
            if skipped
            else f"local time {{value}} occurs twice in {tz} (the clocks go back at a DST change): give its UTC "
            "offset (%z) or zone abbreviation (%Z with --timezone) in --date-format"
        )
        fail_at(df, unresolved, column, message, rename)
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
