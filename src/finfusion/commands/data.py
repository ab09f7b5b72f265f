"""`finfusion data ...`: ingest, list, show, resample, download and synthesise datasets in the lake."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from finfusion.commands.common import LakeOption, busy, out, print_report, reports_errors
from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    from finfusion.data.lake import Lake
    from finfusion.data.report import IngestReport
    from finfusion.data.sources.file_ingest import FileIngest

app = typer.Typer(help="Put data into the lake and look at what is there.", no_args_is_help=True)


class Source(StrEnum):
    csv = "csv"
    parquet = "parquet"
    archive = "archive"
    stocknet = "stocknet"
    kdd17 = "kdd17"
    hf_news = "hf-news"


class BarLabel(StrEnum):
    start = "start"
    end = "end"


class MissingBars(StrEnum):
    flag = "flag"
    drop = "drop"
    ffill = "ffill"


class Adjust(StrEnum):
    auto = "auto"
    none = "none"


class SymbolCase(StrEnum):
    keep = "keep"
    upper = "upper"
    lower = "lower"


class Kind(StrEnum):
    bars = "bars"
    text = "text"
    series = "series"


@app.command(
    epilog="Examples:\n\n"
    "  finfusion data ingest stocknet ../shared/data/stocknet\n\n"
    "  finfusion data ingest csv prices/ --dataset mine --map Ticker=symbol --date-format %d.%m.%Y\n\n"
    "  finfusion data ingest csv news.csv --kind text --dataset news --map headline=title\n\n"
    "  finfusion data ingest csv gdp.csv --kind series --dataset macro --series GDP --map release=published_at\n\n"
    "  finfusion data ingest archive dump.zip --manifest SHA256SUMS --dataset dump"
)
@reports_errors
def ingest(
    source: Annotated[Source, typer.Argument(help="Layout of PATH.")],
    path: Annotated[Path, typer.Argument(help="File or folder (an archive for 'archive').")],
    dataset: Annotated[str | None, typer.Option(help="Dataset name in the lake (default: the source's name).")] = None,
    kind: Annotated[
        Kind, typer.Option(help="csv/parquet/archive: bars, text, or series (point-in-time values with releases).")
    ] = Kind.bars,
    freq: Annotated[str, typer.Option(help="Bar frequency: 1d (one bar per session), 1m, 5m, 30m, 1h, ...")] = "1d",
    calendar: Annotated[str, typer.Option(help="exchange_calendars code (XNYS, XLON, ...) or 24/7.")] = "XNYS",
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            "--timezone",
            help="IANA time zone of local timestamps (bars: the calendar's, text: UTC); zone abbreviations (%Z in "
            "--date-format) are checked against it.",
        ),
    ] = None,
    date_format: Annotated[
        str | None,
        typer.Option(help="strftime format of the dates, e.g. %d/%m/%Y, or '%b %d, %Y %I:%M %p %Z' with --timezone."),
    ] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="Column mapping THEIRS=OURS (repeatable).")] = None,
    bar_label: Annotated[
        BarLabel, typer.Option(help="Intraday timestamps label the bar's start or end.")
    ] = BarLabel.start,
    missing_bars: Annotated[
        MissingBars, typer.Option(help="flag (report gaps; missing values are errors), drop or ffill.")
    ] = MissingBars.flag,
    adjust: Annotated[
        Adjust, typer.Option(help="auto: adj_factor = adj_close / close when adj_close exists; none: keep raw only.")
    ] = Adjust.auto,
    repair: Annotated[
        bool,
        typer.Option(
            help="Sort unsorted rows, drop duplicate timestamps and off-session bars, clip open/close into "
            "[low, high]; every repair is counted."
        ),
    ] = False,
    update: Annotated[
        bool, typer.Option(help="Replace stored rows whose values changed (refused otherwise; history keeps them).")
    ] = False,
    allow_future: Annotated[bool, typer.Option(help="Keep rows dated after now (refused otherwise).")] = False,
    actions: Annotated[
        Path | None, typer.Option(help="CSV of corporate actions: symbol, ex_date, split_ratio, dividend.")
    ] = None,
    symbol_separator: Annotated[str, typer.Option(help="Text: separator of several symbols in one cell.")] = ",",
    symbol: Annotated[
        str | None, typer.Option(help="csv/parquet: the one symbol of input without a symbol column (bars or text).")
    ] = None,
    symbol_case: Annotated[
        SymbolCase, typer.Option(help="Fold symbols from columns and file names: upper, lower, or keep as written.")
    ] = SymbolCase.keep,
    wide_texts: Annotated[
        str | None,
        typer.Option(
            help="Text: a glob of the columns that each hold one text of the row, in rank order (e.g. 'Top*': one "
            "text per non-empty cell, its column name kept as source_ref, byte-literal quotes b'...' taken off)."
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="csv/parquet/archive: set rows that fail validation aside into this CSV (file, row, field, reason) "
            "and ingest the rest; without it one bad row stops the ingest and the lake stays as it was."
        ),
    ] = None,
    series: Annotated[
        str | None, typer.Option(help="Series: the name of a file's one series when it has no series column.")
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="Archive: expected SHA-256 of the archive.")] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Archive: sha256sum-style manifest listing the archive.")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Validate, clean and store a dataset in the lake (re-running on the same input changes nothing)."""
    from finfusion.data.ingest import BarOptions, TextOptions
    from finfusion.data.lake import Lake
    from finfusion.data.series import SeriesOptions
    from finfusion.data.sources.csv_parquet import parse_mapping, read_actions
    from finfusion.data.sources.file_ingest import FileIngest, Rejects, SymbolNames
    from finfusion.data.timestamps import check_zone

    if tz is not None:
        check_zone(tz)
    store = Lake(lake)
    bar_options = BarOptions(
        dataset=dataset or "", freq=freq, calendar=calendar, tz=tz, date_format=date_format,
        bar_label=bar_label.value, missing_bars=missing_bars.value, adjust=adjust.value, repair=repair,
        actions=read_actions(actions) if actions else None, source=source.value, update=update,
        allow_future=allow_future,
    )  # fmt: skip
    text_options = TextOptions(
        dataset=dataset or "", source=source.value, tz=tz, date_format=date_format,
        symbol_separator=symbol_separator, update=update, allow_future=allow_future,
    )  # fmt: skip
    series_options = SeriesOptions(
        dataset=dataset or "", source=source.value, series=series, tz=tz, date_format=date_format,
        update=update, allow_future=allow_future,
    )  # fmt: skip
    if kind is Kind.series and (symbol is not None or symbol_case is not SymbolCase.keep):
        raise FinfusionError("--symbol and --symbol-case name the symbols of bars or texts; series have none")
    names = SymbolNames(symbol.strip() if symbol is not None else None, symbol_case.value)
    if names.constant == "":
        raise FinfusionError("--symbol: an empty symbol")
    mapping = parse_mapping(map_ or [])
    if rejects is not None and source not in (Source.csv, Source.parquet, Source.archive):
        raise FinfusionError(f"--rejects applies to csv, parquet and archive input, not {source.value}")
    if wide_texts is not None and kind is not Kind.text:
        raise FinfusionError("--wide-texts spreads text columns into texts: it needs --kind text")
    set_aside = None if rejects is None else Rejects(rejects)
    files = FileIngest(store, kind, mapping, bar_options, text_options, series_options, names, set_aside, wide_texts)
    if source is Source.stocknet:  # has its own progress bar
        reports = _ingest(source, path, dataset, store, files, sha256=sha256, manifest=manifest)
    else:
        with busy(f"validating and storing {path}"):
            reports = _ingest(source, path, dataset, store, files, sha256=sha256, manifest=manifest)
    for report in reports:
        print_report(report)


def _ingest(
    source: Source, path: Path, dataset: str | None, store: Lake, files: FileIngest, *, sha256: str | None,
    manifest: Path | None,
) -> list[IngestReport]:  # fmt: skip
    from finfusion.data.sources.archive import ingest_archive
    from finfusion.data.sources.hf_news_price import ingest_news_price
    from finfusion.data.sources.kdd17 import ingest_kdd17
    from finfusion.data.sources.stocknet import ingest_stocknet

    if source is Source.stocknet:
        return ingest_stocknet(store, path, dataset or "stocknet")
    if source is Source.kdd17:
        return ingest_kdd17(store, path, dataset or "kdd17")
    if source is Source.hf_news:
        return ingest_news_price(store, path, dataset or "news_price")
    if source is Source.archive:
        return ingest_archive(store, path, dataset=dataset, sha256=sha256, manifest=manifest, ingest_files=files)
    return [files(path, dataset or _default_name(path))]


def _default_name(path: Path) -> str:
    return path.name.split(".")[0] or "dataset"


def _fmt_instant(value: object, daily: bool, tz: str) -> str:
    import polars as pl

    if value is None:
        return ""
    series = pl.Series([value]).dt.convert_time_zone(tz)
    return str(series.dt.date()[0]) if daily else str(series[0])


def _fields(fields: str | None) -> str:
    if not fields:
        return ""
    return "OHLCV" if fields == "open,high,low,close,volume" else f"{fields} only"


@app.command("list", epilog="Example:\n\n  finfusion data list --lake ./finfusion-data")
@reports_errors
def list_(lake: LakeOption = None) -> None:
    """List every dataset: kind, frequency, symbols, rows and date range (session dates for daily bars)."""
    from finfusion.data.catalog import Catalog
    from finfusion.data.lake import Lake

    catalog = Catalog(Lake(lake))
    table = Table("kind", "dataset", "freq", "symbols", "rows", "first", "last", "source", "fields")
    for row in catalog.datasets().iter_rows(named=True):
        tz = catalog.lake.metadata(row["kind"], row["dataset"]).get("timezone", "UTC")
        daily = row["freq"] == "1d"
        table.add_row(
            row["kind"], row["dataset"], row["freq"] or "", f"{row['symbols']:,}", f"{row['rows']:,}",
            _fmt_instant(row["first"], daily, tz), _fmt_instant(row["last"], daily, tz), row["source"] or "",
            _fields(row["fields"]),
        )  # fmt: skip
    out.print(table)


@app.command(epilog="Example:\n\n  finfusion data show stocknet --kind text")
@reports_errors
def show(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    kind: Annotated[str, typer.Option(help="bars, text, events or series.")] = "bars",
    freq: Annotated[str | None, typer.Option(help="Bar frequency (default: the dataset's first).")] = None,
    lake: LakeOption = None,
) -> None:
    """Per-symbol rows and first/last date of one dataset, and its metadata (source, fields, notes)."""
    from finfusion.data.catalog import Catalog
    from finfusion.data.lake import Lake

    store = Lake(lake)
    meta = store.metadata(kind, dataset)
    if kind == "bars" and freq is None:
        freq = (meta.get("freqs") or ["1d"])[0]
    catalog = Catalog(store)
    per_symbol = catalog.symbols(kind, dataset, freq if kind == "bars" else None)
    daily, tz = freq == "1d", meta.get("timezone", "UTC")
    table = Table("symbol", "rows", "first", "last", title=f"{kind} {dataset} {freq or ''}", title_justify="left")
    for row in per_symbol.iter_rows(named=True):
        table.add_row(
            row["symbol"],
            f"{row['rows']:,}",
            _fmt_instant(row["first"], daily, tz),
            _fmt_instant(row["last"], daily, tz),
        )
    out.print(table)
    for key in ("source", "fields", "calendar", "timezone", "notes"):
        if key in meta:
            out.print(f"{key}: {meta[key]}")


KindArgument = Annotated[str, typer.Option(help="bars, text, features, forecasts, ...")]
FreqArgument = Annotated[str | None, typer.Option(help="Frequency (bars, features); default: every one.")]


@app.command(epilog="Example:\n\n  finfusion data history prices --kind bars --freq 1d")
@reports_errors
def history(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    kind: KindArgument = "bars",
    freq: Annotated[str | None, typer.Option(help="Frequency (bars, features).")] = None,
    lake: LakeOption = None,
) -> None:
    """Every commit that changed a dataset: version, time, user, command, and rows new/updated/unchanged."""
    from finfusion.data.lake import Lake

    store = Lake(lake)
    if kind == "bars" and freq is None:
        freq = (store.metadata(kind, dataset).get("freqs") or ["1d"])[0]
    table = Table("version", "time", "user", "command", "operation", "new", "updated", "unchanged", "files")
    for entry in store.history(kind, dataset, freq):
        change, counts = entry["change"], entry["change"]["counts"]
        files = len(change["state"]["files"]) if change["state"] else 0
        operation = change["operation"] + (f" to {change['to_version']}" if "to_version" in change else "")
        table.add_row(
            str(entry["version"]), entry["time"], entry["user"], entry["command"], operation,
            *(f"{counts[k]:,}" if k in counts else "" for k in ("new_rows", "updated_rows", "unchanged_rows")),
            str(files),
        )  # fmt: skip
    out.print(table)


@app.command(epilog="Example:\n\n  finfusion data rollback prices --kind bars --freq 1d")
@reports_errors
def rollback(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    kind: KindArgument = "bars",
    freq: Annotated[str | None, typer.Option(help="Frequency (bars, features).")] = None,
    version: Annotated[
        int | None, typer.Option(help="Lake version to restore (see `data history`); default: the one before last.")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Restore a dataset as an earlier commit left it (a new commit: rolling back can itself be rolled back)."""
    from finfusion.data.lake import Lake

    store = Lake(lake)
    if kind == "bars" and freq is None:
        freq = (store.metadata(kind, dataset).get("freqs") or ["1d"])[0]
    restored = store.rollback(kind, dataset, freq, version=version)
    out.print(f"{kind} {dataset}{' ' + freq if freq else ''}: restored as of version {restored}")


@app.command(epilog="Example:\n\n  finfusion data delete news --kind text")
@reports_errors
def delete(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    kind: KindArgument = "bars",
    freq: FreqArgument = None,
    lake: LakeOption = None,
) -> None:
    """Remove a dataset from the lake in one commit (`data rollback` brings it back until `data vacuum`)."""
    from finfusion.data.lake import Lake

    for key in Lake(lake).delete(kind, dataset, freq):
        out.print(f"deleted {key}")


@app.command(epilog="Example:\n\n  finfusion data vacuum --keep 10")
@reports_errors
def vacuum(
    keep: Annotated[int, typer.Option(help="Keep the files of this many latest commits restorable.")] = 10,
    lake: LakeOption = None,
) -> None:
    """Delete data files that only versions older than the last KEEP commits use (they can no longer be restored)."""
    from finfusion.data.lake import Lake

    out.print(f"removed {Lake(lake).vacuum(keep):,} files")


@app.command(epilog="Example:\n\n  finfusion data synth --symbols 50 --start 2015-01-01 --end 2020-12-31 --seed 7")
@reports_errors
def synth(
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "synthetic",
    symbols: Annotated[int, typer.Option(help="Number of symbols.")] = 20,
    start: Annotated[str, typer.Option(help="First calendar day.")] = "2018-01-01",
    end: Annotated[str, typer.Option(help="Last calendar day.")] = "2020-12-31",
    freq: Annotated[str, typer.Option(help="1d or an intraday frequency such as 5m.")] = "1d",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same market).")] = 0,
    lake: LakeOption = None,
) -> None:
    """Make the seeded synthetic multimodal market (prices + news with planted effects) and ingest it."""
    from finfusion.data.lake import Lake
    from finfusion.data.sources.synthetic import SyntheticConfig
    from finfusion.data.sources.synthetic_ingest import make_and_ingest

    config = SyntheticConfig(n_symbols=symbols, start=start, end=end, freq=freq, seed=seed)
    for report in make_and_ingest(Lake(lake), config, dataset):
        print_report(report)


@app.command(epilog="Example:\n\n  finfusion data resample intraday --from 1m --to 5m")
@reports_errors
def resample(
    dataset: Annotated[str, typer.Argument(help="Bars dataset.")],
    to: Annotated[str, typer.Option("--to", help="Target frequency (3m, 5m, 30m, 1h, 1d).")],
    from_: Annotated[str, typer.Option("--from", help="Source frequency.")] = "1m",
    lake: LakeOption = None,
) -> None:
    """Aggregate bars to a coarser frequency inside exchange sessions; stored beside the source frequency."""
    from finfusion.data.calendar import calendar_covering
    from finfusion.data.lake import Lake
    from finfusion.data.resample import resample_bars
    from finfusion.data.schema import BARS

    store = Lake(lake)
    meta = store.metadata("bars", dataset)
    bars = store.read("bars", dataset, freq=from_)
    calendar = calendar_covering(meta.get("calendar", "XNYS"), (bars["ts"].dt.year().min(), bars["ts"].dt.year().max()))
    result = store.write(BARS, dataset, resample_bars(bars, calendar, to, from_freq=from_), freq=to, metadata={})
    out.print(f"{dataset}: {from_} -> {to}: {result.rows:,} bars, {result.files_written} files written")


@app.command(
    epilog="Examples:\n\n  finfusion data download stocknet\n\n  finfusion data download hf-news --to ./raw/news_price"
)
@reports_errors
def download(
    name: Annotated[str, typer.Argument(help="stocknet, kdd17 or hf-news.")],
    url: Annotated[str | None, typer.Option(help="Fetch from this address instead (a mirror).")] = None,
    to: Annotated[Path | None, typer.Option(help="hf-news: folder for the parquet files.")] = None,
    repo: Annotated[
        str | None, typer.Option(help="hf-news: hub dataset name or a local folder (default: the published one).")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Download a public dataset (needs a network), check its digests, then ingest it."""
    from finfusion.data.download import REMOTE
    from finfusion.data.download import download as download_remote
    from finfusion.data.lake import Lake
    from finfusion.data.sources.hf_news_price import HUB_REPO, download_news_price, ingest_news_price

    store = Lake(lake)
    if name == "hf-news":
        folder = download_news_price(to or store.root / "_downloads" / "news_price", repo or HUB_REPO)
        reports = ingest_news_price(store, folder, "news_price")
    elif name in REMOTE:
        reports = download_remote(store, REMOTE[name], url=url)
    else:
        raise FinfusionError(f"unknown dataset '{name}': choose stocknet, kdd17 or hf-news")
    for report in reports:
        print_report(report)
