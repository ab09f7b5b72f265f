"""Point-in-time exogenous series (macro indicators, policy rates and events, indices): every value carries the
period it describes and the instant it became known, so revisions (vintages) sit beside the first release and a read
as of an instant returns only what had been published by then.

The `series` table (data/schema.py SERIES): series, period (UTC instant the period starts; a date is its midnight),
published_at (UTC instant of the release), value; key (series, period, published_at). A GDP figure for March 2024
released on 2024-04-25 and revised on 2024-05-30 is two rows; `as_of(rows, 2024-05-01)` returns the first.

Ingest (`finfusion data ingest csv FILE --kind series`, column mapping like the other kinds) refuses, with one line
naming file, row and field: a period or release that is not a date, an ambiguous day/month order, a missing or
non-numeric value, a release dated before the period it describes, a release in the future (--allow-future), and
two rows with the same series, period and release but different values. A file holding one series and no series
column names it with --series.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from finfusion.data.ingest import refuse_future
from finfusion.data.report import IngestReport
from finfusion.data.schema import SERIES, SOURCE_FILE, SOURCE_ROW
from finfusion.data.timestamps import TS_TEXT, parse_instants
from finfusion.data.validate import fail_at, parse_numbers, require_columns
from finfusion.errors import DataValidationError

#: Column names recognised without a mapping (FRED / ALFRED style headers included).
SERIES_ALIASES = {
    "series": "series", "series_id": "series", "indicator": "series", "name": "series",
    "period": "period", "date": "period", "observation_date": "period", "reference_period": "period",
    "published_at": "published_at", "release_date": "published_at", "realtime_start": "published_at",
    "vintage": "published_at", "vintage_date": "published_at", "value": "value",
}  # fmt: skip


@dataclass
class SeriesOptions:
    """How to read series. `series`: the name of a file's one series when it has no series column; `tz`: the time
    zone of naive release times (None: UTC; periods are read as UTC dates)."""

    dataset: str
    source: str = "csv"
    series: str | None = None
    tz: str | None = None
    date_format: str | None = None
    notes: list[str] = field(default_factory=list)
    update: bool = False
    allow_future: bool = False
    unmapped: tuple[str, ...] = ()


def prepare_series(
    raw: pl.DataFrame, options: SeriesOptions, report: IngestReport, rename: Mapping[str, str]
) -> pl.DataFrame:
    """Validate raw series rows (module docstring); returns canonical rows. Raises on the first bad row."""
    file = raw[SOURCE_FILE][0] if raw.height else "input"
    if raw.height == 0:
        raise DataValidationError("no data rows", file=file)
    df = (
        raw
        if "series" in raw.columns or options.series is None
        else raw.with_columns(pl.lit(options.series).alias("series"))
    )
    require_columns(df, ["series", "period", "published_at", "value"], file, rename)
    report.rows_in += df.height
    df = df.with_columns(pl.col("series").cast(pl.String).str.strip_chars())
    fail_at(df, pl.col("series").fill_null("") == "", "series", "series name is empty", rename)
    df = parse_numbers(df, ["value"], rename)
    fail_at(df, pl.col("value").is_null(), "value", "value is missing", rename)
    for column, tz in (("period", "UTC"), ("published_at", options.tz)):
        df = df.with_columns(pl.col(column).cast(pl.String).alias(TS_TEXT))
        df = df.with_columns(parse_instants(df, column, tz=tz, date_format=options.date_format, rename=rename))
        if column == "published_at":
            refuse_future(df, column, options.allow_future, rename)
            early = pl.col("published_at") < pl.col("period")
            message = "release {value} is before the start of the period it describes"
            fail_at(df, early, TS_TEXT, message, {**rename, TS_TEXT: rename.get(column, column)})
        df = df.drop(TS_TEXT)
    key = ["series", "period", "published_at"]
    clash = pl.col("value") != pl.col("value").first().over(key)
    fail_at(df, clash, "value", "value {value} differs from another row of the same series, period and release", rename)
    report.count("duplicate_rows_dropped", df.height - df.select(key).n_unique())
    df = df.unique(subset=key, keep="last", maintain_order=True)
    return SERIES.conform(df.drop(SOURCE_FILE, SOURCE_ROW)).sort(key)


def series_metadata(options: SeriesOptions, report: IngestReport) -> dict[str, object]:
    return {"source": options.source, "notes": report.notes}


def as_of(rows: pl.DataFrame, instant: datetime) -> pl.DataFrame:
    """Of series rows, per (series, period) the latest release published at or before `instant` (a UTC datetime):
    what was known then; periods not yet released are absent."""
    known = rows.filter(pl.col("published_at") <= instant)
    return known.sort("published_at").group_by("series", "period", maintain_order=True).last().sort("series", "period")
