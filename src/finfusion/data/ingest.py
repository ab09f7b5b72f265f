"""The ingest pipeline shared by every source: raw frame -> validated, cleaned, canonical rows -> the lake.

A source turns its files into a raw polars frame with canonical column names (values may still be text) plus the
provenance columns `_file` and `_row`. Everything is checked before anything is written, so a bad input leaves
the lake exactly as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import polars as pl

from finfusion.data.calendar import Frequency, calendar_covering, get_calendar, parse_freq
from finfusion.data.clean import (
    MissingPolicy,
    adjust_from_actions,
    adjust_from_adj_close,
    count_gaps,
    fill_gaps,
    flag_volume_anomalies,
    forward_fill_prices,
)
from finfusion.data.labels import parse_labels
from finfusion.data.lake import Lake, WritePolicy, WriteResult
from finfusion.data.ordering import strictly_ordered
from finfusion.data.report import IngestReport
from finfusion.data.schema import BARS, PRICE_FIELDS, SOURCE_FILE, SOURCE_ROW, TEXT, TableSchema
from finfusion.data.timestamps import TS_TEXT, daily_session_closes, intraday_bar_ends, parse_instants, session_dates
from finfusion.data.validate import (
    check_prices,
    check_symbols,
    fail_at,
    order_problems,
    parse_numbers,
    require_columns,
)
from finfusion.errors import DataValidationError

OHLCV = ("open", "high", "low", "close", "volume")
#: Rows dated later than now plus this are refused unless --allow-future (a daily bar's close may be hours ahead).
FUTURE_TOLERANCE = timedelta(days=1)


@dataclass
class BarOptions:
    """How to read and clean bars. `fields` lists the price fields the source really has (close-only sources);
    `update`, `allow_future` and `unmapped` as in `TextOptions`."""

    dataset: str
    freq: str = "1d"
    calendar: str = "XNYS"
    tz: str | None = None
    date_format: str | None = None
    bar_label: Literal["start", "end"] = "start"
    missing_bars: MissingPolicy = "flag"
    repair: bool = False
    adjust: Literal["auto", "none"] = "auto"
    actions: pl.DataFrame | None = None
    volume_z: float = 6.0
    fields: tuple[str, ...] = OHLCV
    source: str = "csv"
    notes: list[str] = field(default_factory=list)
    update: bool = False
    allow_future: bool = False
    unmapped: tuple[str, ...] = ()


@dataclass
class TextOptions:
    """How to read texts. `tz`: the time zone of naive times (None: UTC; needed for zone abbreviations); `update`:
    replace stored rows whose values changed (refused otherwise); `allow_future`: keep rows dated after now;
    `unmapped`: the file's columns that are not stored (listed in the report)."""

    dataset: str
    source: str = "csv"
    tz: str | None = None
    date_format: str | None = None
    symbol_separator: str = ","
    notes: list[str] = field(default_factory=list)
    update: bool = False
    allow_future: bool = False
    unmapped: tuple[str, ...] = ()


def prepare_bars(
    raw: pl.DataFrame, options: BarOptions, report: IngestReport, rename: Mapping[str, str]
) -> pl.DataFrame:
    """Validate and clean raw bars; returns canonical rows sorted by (symbol, ts). Raises on the first bad row."""
    freq = parse_freq(options.freq)
    file = raw[SOURCE_FILE][0] if raw.height else "input"
    if raw.height == 0:
        raise DataValidationError("no data rows", file=file)
    require_columns(raw, ["symbol", "ts", *options.fields], file, rename)
    report.rows_in += raw.height
    df = raw.with_columns(pl.col("symbol").cast(pl.String).str.strip_chars())
    check_symbols(df, rename)
    numeric = [c for c in (*OHLCV, "adj_close") if c in df.columns]
    df = parse_labels(parse_numbers(df, numeric, rename), rename)
    required_values = [c for c in options.fields if c in OHLCV]
    df = df.with_columns(pl.any_horizontal([pl.col(c).is_null() for c in required_values]).alias("__missing"))
    df = _handle_missing_values(df, options.missing_bars, rename, report)
    check_prices(df, rename, price_columns=[c for c in (*PRICE_FIELDS, "adj_close") if c in df.columns])
    df = _within_low_high(df, options.repair, rename, report)
    df = _bar_times(df, options, freq, rename, report)
    refuse_future(df, "ts", options.allow_future, rename)
    df = _order(df, options.repair, rename, report)
    df = df.drop(SOURCE_FILE, SOURCE_ROW, TS_TEXT)
    calendar = calendar_covering(options.calendar, _years(df["ts"]))
    gaps = count_gaps(df, calendar, freq)
    report.count("missing_bars_found", sum(gaps.values()))
    if options.missing_bars == "ffill":
        df, filled = fill_gaps(df, calendar, freq)
        report.count("missing_bars_filled", filled)
    df = _adjust(df, options, report)
    if "volume" in options.fields:
        df, flagged = flag_volume_anomalies(df, options.volume_z)
        report.count("volume_anomalies_flagged", flagged)
    return BARS.conform(df)


def _handle_missing_values(
    df: pl.DataFrame, policy: MissingPolicy, rename: Mapping[str, str], report: IngestReport
) -> pl.DataFrame:
    """Rows with a missing price/volume: an error under 'flag', dropped under 'drop', forward-filled under 'ffill'."""
    if policy == "flag":
        for col in (c for c in OHLCV if c in df.columns):
            fail_at(
                df,
                pl.col("__missing") & pl.col(col).is_null(),
                col,
                "value is missing (use --missing-bars drop or ffill to repair)",
                rename,
            )
        return df.drop("__missing")
    n_missing = int(df["__missing"].sum())
    if policy == "drop" or n_missing == 0:
        report.count("rows_with_missing_values_dropped", n_missing)
        return df.filter(~pl.col("__missing")).drop("__missing")
    leading = pl.col("close").forward_fill().over("symbol").is_null() & pl.col("__missing")
    n_leading = int(df.select(leading.sum()).item())
    report.count("rows_with_missing_values_dropped", n_leading)
    report.count("rows_with_missing_values_filled", n_missing - n_leading)
    df = df.filter(~leading).rename({"__missing": "__fill"})
    return forward_fill_prices(df)


def _within_low_high(df: pl.DataFrame, repair: bool, rename: Mapping[str, str], report: IngestReport) -> pl.DataFrame:
    """Open and close must lie in [low, high]: an error, or with `repair` clipped into the range and counted."""
    if not {"open", "high", "low", "close"} <= set(df.columns):
        return df
    outside = pl.lit(False)
    for col in ("open", "close"):
        beyond = (pl.col(col) < pl.col("low")) | (pl.col(col) > pl.col("high"))
        if not repair:
            fail_at(df, beyond, col, col + " {value} is outside the row's [low, high] (--repair clips it)", rename)
        outside = outside | beyond.fill_null(False)
    report.count("prices_clipped_into_low_high", int(df.select(outside.sum()).item()))
    return df.with_columns(pl.col(c).clip(pl.col("low"), pl.col("high")) for c in ("open", "close"))


def refuse_future(df: pl.DataFrame, column: str, allow: bool, rename: Mapping[str, str]) -> None:
    """Rows dated after now (plus FUTURE_TOLERANCE) are errors unless `allow`."""
    if allow:
        return
    limit = datetime.now(UTC) + FUTURE_TOLERANCE
    shown = TS_TEXT if TS_TEXT in df.columns else column
    message = "date {value} is in the future (later than now plus one day; --allow-future keeps it)"
    fail_at(df, pl.col(column) > limit, shown, message, {**rename, TS_TEXT: rename.get(column, column)})


def _bar_times(
    df: pl.DataFrame, options: BarOptions, freq: Frequency, rename: Mapping[str, str], report: IngestReport
) -> pl.DataFrame:
    tz = options.tz or get_calendar(options.calendar).tz
    df = df.with_columns(pl.col("ts").cast(pl.String).alias(TS_TEXT))  # the user's text, for messages
    if freq.is_daily:
        df = df.with_columns(session_dates(df["ts"]))
    instants = parse_instants(df, "ts", tz=options.tz, default_tz=tz, date_format=options.date_format, rename=rename)
    calendar = calendar_covering(options.calendar, _years(instants))
    if freq.is_daily:
        ts, outside = daily_session_closes(df, instants, calendar)
        what = f"date is not a {calendar.name} session"
    else:
        ts, outside = intraday_bar_ends(instants, freq, calendar, bar_label=options.bar_label)
        what = f"bar ends outside every {calendar.name} session ({options.bar_label} label, --tz {tz})"
    df = df.with_columns(ts.alias("ts"), pl.Series("__outside", outside))
    if options.repair:
        report.count("bars_outside_sessions_dropped", int(outside.sum()))
        return df.filter(~pl.col("__outside")).drop("__outside")
    shown = {**rename, TS_TEXT: rename.get("ts", "ts")}
    fail_at(df, pl.col("__outside"), TS_TEXT, what + ": {value}", shown)
    return df.drop("__outside")


def _order(df: pl.DataFrame, repair: bool, rename: Mapping[str, str], report: IngestReport) -> pl.DataFrame:
    """Duplicate and unsorted timestamps: errors, or with `repair` sorted and de-duplicated (the last row wins)."""
    if strictly_ordered(df, ["symbol", "ts"]):  # the common case: nothing to check further, nothing to sort
        return df
    dup, unsorted = order_problems(df, ["symbol", "ts"], "ts")
    if not repair:
        shown = {**rename, TS_TEXT: rename.get("ts", "ts")}
        fail_at(
            df,
            unsorted,
            TS_TEXT,
            "timestamp {value} is earlier than the row before it (unsorted; --repair sorts)",
            shown,
        )
        fail_at(df, dup, TS_TEXT, "duplicate timestamp {value} for this symbol (--repair keeps the last row)", shown)
    report.count("unsorted_rows_sorted", int(unsorted.sum()))
    report.count("duplicate_rows_dropped", int(dup.sum()))
    if dup.any():
        df = df.unique(subset=["symbol", "ts"], keep="last", maintain_order=True)
    return df.sort("symbol", "ts", maintain_order=True)


def _adjust(df: pl.DataFrame, options: BarOptions, report: IngestReport) -> pl.DataFrame:
    if options.actions is not None:
        report.note("prices adjusted backward from the corporate-actions file (adj_factor, adj_close)")
        return adjust_from_actions(df, options.actions)
    if "adj_factor" in df.columns:
        return df
    if "adj_close" in df.columns and options.adjust == "auto":
        report.note("adj_factor = adj_close / close")
        return adjust_from_adj_close(df)
    return df


def _years(instants: pl.Series) -> tuple[int, int]:
    first, last = instants.min(), instants.max()
    return (first.year, last.year) if first is not None and last is not None else (2000, 2000)


@dataclass
class Prepared:
    """Validated rows ready for `write_prepared`, with the report of how they were checked and cleaned."""

    schema: TableSchema
    frame: pl.DataFrame
    freq: str | None
    metadata: dict[str, object]
    report: IngestReport
    policy: WritePolicy


def prepare_bar_ingest(raw: pl.DataFrame, options: BarOptions, rename: Mapping[str, str] | None = None) -> Prepared:
    report = start_report("bars", options)
    bars = prepare_bars(raw, options, report, rename or {})
    return Prepared(BARS, bars, options.freq, bar_metadata(options, report), report, ingest_policy(options.update))


def bar_metadata(options: BarOptions, report: IngestReport) -> dict[str, object]:
    """What a bars dataset records about its source: fields, calendar, time zone and the ingest's notes."""
    return {
        "source": options.source,
        "fields": list(options.fields),
        "calendar": options.calendar,
        "timezone": get_calendar(options.calendar).tz,
        "notes": report.notes,
    }


def prepare_text_ingest(raw: pl.DataFrame, options: TextOptions, rename: Mapping[str, str] | None = None) -> Prepared:
    report = start_report("text", options)
    texts = prepare_texts(raw, options, report, rename or {})
    return Prepared(TEXT, texts, None, text_metadata(options, report), report, ingest_policy(options.update))


def text_metadata(options: TextOptions, report: IngestReport) -> dict[str, object]:
    return {"source": options.source, "notes": report.notes}


def ingest_policy(update: bool = False) -> WritePolicy:
    """Ingests never let a missing value replace a stored one, and change stored values only when asked."""
    return WritePolicy(changes="update" if update else "refuse", keep_stored=True)


def start_report(kind: str, options: Any) -> IngestReport:
    """A report of an ingest of `kind` with `options` (BarOptions, TextOptions, SeriesOptions): its notes and the
    columns it does not store."""
    report = IngestReport(kind=kind, dataset=options.dataset, source=options.source)
    for text in options.notes:
        report.note(text)
    if options.unmapped:
        listed = ", ".join(repr(name) for name in options.unmapped)
        report.note(f"columns not stored (not mapped; --map THEIRS=OURS stores one): {listed}")
    return report


def write_prepared(lake: Lake, parts: list[Prepared]) -> list[IngestReport]:
    """Write tables that were all validated first, in one commit: a bad table never leaves a good one half-ingested,
    and stored values that would change are counted and refused unless the part's options allow updates."""
    with lake.transaction() as transaction:
        for part in parts:
            result = transaction.write(
                part.schema, part.report.dataset, part.frame, freq=part.freq, metadata=part.metadata,
                policy=part.policy,
            )  # fmt: skip
            record_write(part.report, result)
            refuse_changes(part.policy, result, part.report)
    return [part.report for part in parts]


def refuse_changes(policy: WritePolicy, result: WriteResult, report: IngestReport) -> None:
    """Raise (aborting the transaction) when a write that may not change stored rows would change some."""
    if policy.changes == "refuse" and result.updated_rows:
        raise DataValidationError(
            f"{result.updated_rows:,} stored {report.kind} rows of '{report.dataset}' would change "
            f"(first: {result.first_change}); nothing was written: pass --update to replace them "
            "(the previous version stays in `finfusion data history`)"
        )


def ingest_bars(
    lake: Lake, raw: pl.DataFrame, options: BarOptions, *, rename: Mapping[str, str] | None = None
) -> IngestReport:
    """Validate, clean and write bars; returns the report of what was done."""
    return write_prepared(lake, [prepare_bar_ingest(raw, options, rename)])[0]


def record_write(report: IngestReport, result: WriteResult) -> None:
    report.rows_written += result.rows
    report.new_rows += result.new_rows
    report.updated_rows += result.updated_rows
    report.files_written += result.files_written
    report.files_unchanged += result.files_unchanged
    report.count("stored_values_kept_where_the_input_had_none", result.kept_values)


def text_id(frame: pl.DataFrame) -> pl.Series:
    """Content hash [N]: sha256 (32 hex chars) of published_at, symbols, title, body, source, url, author, ref."""
    parts = frame.select(
        pl.col("published_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
        pl.col("symbols").list.sort().list.join(","),
        *(pl.col(c).fill_null("") for c in ("title", "body", "source", "url", "author", "source_ref")),
    )
    keys = parts.select(pl.concat_str(pl.all(), separator="\x1f")).to_series().to_list()
    return pl.Series("id", [hashlib.sha256(k.encode("utf-8")).hexdigest()[:32] for k in keys], dtype=pl.String)


def prepare_texts(
    raw: pl.DataFrame, options: TextOptions, report: IngestReport, rename: Mapping[str, str]
) -> pl.DataFrame:
    """Validate raw texts and give each its content-hash id; returns canonical rows."""
    file = raw[SOURCE_FILE][0] if raw.height else "input"
    if raw.height == 0:
        raise DataValidationError("no data rows", file=file)
    require_columns(raw, ["published_at"], file, rename)
    if "title" not in raw.columns and "body" not in raw.columns:
        require_columns(raw, ["title"], file, rename)
    report.rows_in += raw.height
    df = raw
    for col in ("title", "body", "source", "url", "author", "source_ref"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(options.source if col == "source" else None, dtype=pl.String).alias(col))
        else:
            df = df.with_columns(pl.col(col).cast(pl.String).str.strip_chars())
    df = df.with_columns(pl.col("published_at").cast(pl.String).alias(TS_TEXT))
    df = df.with_columns(
        parse_instants(df, "published_at", tz=options.tz, date_format=options.date_format, rename=rename)
    )
    refuse_future(df, "published_at", options.allow_future, rename)
    empty = (pl.col("title").fill_null("") == "") & (pl.col("body").fill_null("") == "")
    fail_at(df, empty, "title", "text is empty (both title and body)", rename)
    df = df.with_columns(_symbols(df, options.symbol_separator))
    members = (
        df.select(SOURCE_FILE, SOURCE_ROW, pl.col("symbols").alias("symbol")).explode("symbol").drop_nulls("symbol")
    )
    if members.height:
        check_symbols(members, {"symbol": rename.get("symbols", "symbols")})
    df = df.with_columns(text_id(df).alias("id") if "id" not in raw.columns else pl.col("id").cast(pl.String))
    report.count("duplicate_texts_dropped", df.height - df["id"].n_unique())
    df = df.unique(subset=["id"], keep="last", maintain_order=True)
    return TEXT.conform(df.drop(SOURCE_FILE, SOURCE_ROW, TS_TEXT))


def _symbols(df: pl.DataFrame, separator: str) -> pl.Expr:
    if "symbols" not in df.columns:
        return pl.lit([], dtype=pl.List(pl.String)).alias("symbols")
    dtype = df.schema["symbols"]
    if dtype == pl.String:
        listed = pl.col("symbols").str.split(separator)
    elif isinstance(dtype, pl.List):
        listed = pl.col("symbols").cast(pl.List(pl.String))
    else:
        raise DataValidationError(
            f"column has type {dtype}, expected a list or '{separator}'-separated text", field="symbols"
        )
    cleaned = listed.list.eval(pl.element().str.strip_chars().filter(pl.element() != "")).list.unique().list.sort()
    return cleaned.fill_null(pl.lit([], dtype=pl.List(pl.String))).alias("symbols")


def ingest_texts(
    lake: Lake, raw: pl.DataFrame, options: TextOptions, *, rename: Mapping[str, str] | None = None
) -> IngestReport:
    """Validate and write texts; returns the report."""
    return write_prepared(lake, [prepare_text_ingest(raw, options, rename)])[0]
