"""Local timestamps that carry a time zone abbreviation (`Jun 3, 2022 4:05 PM EDT`, `03-Jun-2022 16:05 EST`), read
with a `--date-format` holding `%Z` and `--timezone ZONE`: checked against the zone, then converted to UTC.

The abbreviation must be one the zone uses and the one in force at that local time: `EST` on a June date in
America/New_York is refused, never read as the other offset. It settles the hour repeated when the clocks go back
(`1:30 AM EDT` is the first, `1:30 AM EST` the second); a local time the clocks skip is refused whatever it says.
Without a zone, abbreviations are refused: CST is Central Standard Time in Chicago and China Standard Time in Beijing.

Why the check is written here: polars' strptime (chrono) accepts `%Z` but skips the name it reads, Python's strptime
knows only UTC, GMT and the machine's own zone, and zoneinfo has no lookup from an abbreviation to an offset. What
polars and the zone database do give is the abbreviation in force at an instant (`%Z` when formatting). So the local
time is parsed by polars, localised by polars both ways (earliest and latest, which differ only in a repeated hour),
and the user's abbreviation, found by parsing with each of the zone's abbreviations as a literal, is compared with
the two; only that comparison, vectorised, is ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

import polars as pl

from finfusion.data.validate import fail_at
from finfusion.errors import DataValidationError

ABBREVIATION = "%Z"
_DIRECTIVE = re.compile(r"%.")
#: Step of the sampling of a zone's abbreviations: every period between two changes of the clocks is longer.
_SAMPLE_EVERY = "6h"


def has_abbreviation(date_format: str | None) -> bool:
    """Whether a strftime format reads a zone abbreviation (`%Z`; `%%Z` is a literal)."""
    return date_format is not None and ABBREVIATION in _DIRECTIVE.findall(date_format)


def refuse_without_zone(date_format: str, file: str | None, field: str) -> None:
    """Raise: an abbreviation read without --timezone would be guessed."""
    raise DataValidationError(
        f"--date-format '{date_format}' reads a time zone abbreviation (%Z): give --timezone (e.g. America/New_York) "
        "to check it against; abbreviations name different zones worldwide (CST: Chicago or China)",
        file=file,
        field=field,
    )


def parse_abbreviated(
    df: pl.DataFrame, column: str, *, tz: str, date_format: str, rename: Mapping[str, str]
) -> pl.Series:
    """`df[column]` (text: a local time and its zone abbreviation, as `date_format` says) as UTC instants [N]
    (Datetime us UTC; null where the text is null).

    Raises, naming the first such row, on text that does not match the format, an abbreviation `tz` does not use in
    those years, a local time that does not exist in `tz`, an abbreviation not in force at that local time, and a
    repeated local time whose two instants share one abbreviation.
    """
    text = df[column].str.strip_chars()
    naive = text.str.strptime(pl.Datetime("us"), date_format, strict=False)
    hint = f"value {{value}} does not match the date format '{_braces(date_format)}' (see --date-format)"
    fail_at(df, naive.is_null() & text.is_not_null(), column, hint, rename)
    years = naive.drop_nulls().dt.year()
    if years.is_empty():
        return naive.dt.replace_time_zone("UTC").alias(column)
    used = zone_abbreviations(tz, int(years.min()), int(years.max()))
    written = [
        pl.when(
            text.str.strptime(pl.Datetime("us"), _with_literal(date_format, name), strict=False).is_not_null()
        ).then(pl.lit(name))
        for name in used
    ]
    ways = {way: naive.dt.replace_time_zone(tz, ambiguous=way, non_existent="null") for way in ("earliest", "latest")}
    checked = df.with_columns(
        naive.is_not_null().alias("__given"),
        pl.coalesce(written).alias("__written"),
        *(instants.alias(f"__{way}") for way, instants in ways.items()),
        *(instants.dt.strftime(ABBREVIATION).alias(f"__{way}_name") for way, instants in ways.items()),
    )
    given = pl.col("__given")
    unknown = f"value {{value}}: its time zone abbreviation is not one {tz} uses in those years ({', '.join(used)})"
    fail_at(checked, given & pl.col("__written").is_null(), column, unknown, rename)
    skipped = f"local time {{value}} does not exist in {tz} (the clocks skip it at a DST change)"
    fail_at(checked, given & pl.col("__earliest").is_null(), column, skipped, rename)
    _refuse_not_in_force(checked, column, tz, rename)
    twice = (pl.col("__earliest") != pl.col("__latest")) & (pl.col("__earliest_name") == pl.col("__latest_name"))
    same = f"local time {{value}} occurs twice in {tz} under one abbreviation: give its UTC offset (%z) instead"
    fail_at(checked, twice, column, same, rename)
    chosen = pl.when(pl.col("__written") == pl.col("__earliest_name")).then("__earliest").otherwise("__latest")
    return checked.select(chosen.dt.convert_time_zone("UTC").alias(column)).to_series()


def _refuse_not_in_force(checked: pl.DataFrame, column: str, tz: str, rename: Mapping[str, str]) -> None:
    """Raise for the first row whose abbreviation is neither the one of the earliest nor of the latest instant of
    its local time (both the same outside a repeated hour)."""
    wrong = (pl.col("__written") != pl.col("__earliest_name")) & (pl.col("__written") != pl.col("__latest_name"))
    hits = checked.filter(wrong)
    if hits.height:
        first = hits.row(0, named=True)
        in_force = f"{first['__written']} is not in force in {tz} at that local time ({first['__earliest_name']} is)"
        fail_at(checked, wrong, column, "value {value}: " + in_force, rename)


def zone_abbreviations(tz: str, first_year: int, last_year: int) -> list[str]:
    """The abbreviations `tz` uses from a year before `first_year` to a year after `last_year`, in order of use."""
    start = datetime(max(first_year - 1, 1), 1, 1)
    end = datetime(min(last_year + 1, 9999), 12, 31)
    instants = pl.datetime_range(start, end, _SAMPLE_EVERY, time_zone="UTC", eager=True)
    return instants.dt.convert_time_zone(tz).dt.strftime(ABBREVIATION).unique(maintain_order=True).to_list()


def _with_literal(date_format: str, name: str) -> str:
    """`date_format` with its `%Z` replaced by the abbreviation `name` as literal text."""
    return _DIRECTIVE.sub(lambda m: name.replace("%", "%%") if m.group() == ABBREVIATION else m.group(), date_format)


def _braces(text: str) -> str:
    """`text` safe inside a message that `str.format` fills."""
    return text.replace("{", "{{").replace("}", "}}")
