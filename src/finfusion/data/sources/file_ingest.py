"""`finfusion data ingest csv|parquet`: files or folders of bars or texts, streamed so that memory is bounded by a
bucket, not by the files.

Pass 1 streams every file (polars' streaming CSV/Parquet scan) into the ingest's staging folder, split into buckets:
bars by a hash of the symbol, so each symbol's rows land whole in one bucket and in file order; texts by a hash of the
row. The number of buckets grows with the input's size (one per `bucket_bytes` of input). Pass 2 validates and cleans
one bucket at a time with the same `prepare_bars` / `prepare_texts` as every other source and stages its partitions in
one lake transaction: nothing is visible until every bucket passed, and a bad row anywhere leaves the lake as it was.
Peak memory is about one bucket plus the largest symbol, whatever the files' length.

Hand-written because no library does validation-then-atomic-merge by bucket; the streaming itself is polars'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from finfusion.data.commits import remove_staging, staging_folder
from finfusion.data.ingest import (
    BarOptions,
    TextOptions,
    bar_metadata,
    ingest_policy,
    prepare_bars,
    prepare_texts,
    record_write,
    refuse_changes,
    start_report,
    text_metadata,
)
from finfusion.data.lake import Lake, WriteResult
from finfusion.data.report import IngestReport
from finfusion.data.schema import BARS, SOURCE_FILE, SOURCE_ROW, TEXT
from finfusion.data.sources.csv_parquet import (
    BAR_ALIASES,
    PARQUET_SUFFIXES,
    TEXT_ALIASES,
    column_renames,
    csv_header,
    file_stem,
    list_files,
    numeric_columns,
    read_file,
)
from finfusion.errors import DataValidationError

#: Input bytes per bucket: the unit of memory of an ingest.
BUCKET_BYTES = 16 << 20
BUCKET = "__bucket"


@dataclass
class FileIngest:
    """Ingest a CSV/Parquet file or folder as bars or text with the given options (used directly and by archives)."""

    lake: Lake
    kind: str
    mapping: dict[str, str]
    bar_options: BarOptions
    text_options: TextOptions

    def __call__(self, path: Path, dataset: str) -> IngestReport:
        options = replace(self.text_options if self.kind == "text" else self.bar_options, dataset=dataset)
        return ingest_files(self.lake, path, options, mapping=self.mapping)


def ingest_files(
    lake: Lake,
    path: Path,
    options: BarOptions | TextOptions,
    *,
    mapping: Mapping[str, str],
    bucket_bytes: int = BUCKET_BYTES,
) -> IngestReport:
    """Validate, clean and write the files at `path` (a file or folder) as bars or texts (by the options' type) of
    `options.dataset`, one bucket at a time, in one commit; returns the report."""
    bars = isinstance(options, BarOptions)
    files = list_files(path)
    buckets = max(1, sum(f.stat().st_size for f in files) // bucket_bytes + 1)
    staging = staging_folder(lake.root)
    try:
        rename: dict[str, str] = {}
        unmapped: dict[str, None] = {}
        for number, file in enumerate(files):
            target = staging / f"file={number:06d}"
            names, dropped = _spill(file, target, buckets, BAR_ALIASES if bars else TEXT_ALIASES, mapping, bars)
            rename.update(names)
            unmapped.update(dict.fromkeys(dropped))
        options = replace(options, unmapped=tuple(unmapped))
        report = start_report("bars" if bars else "text", options)
        policy = ingest_policy(options.update)
        total = WriteResult()
        with lake.transaction() as transaction:
            for bucket in range(buckets):
                parts = sorted(staging.glob(f"file=*/{BUCKET}={bucket}/*.parquet"))
                if not parts:
                    continue
                raw = pl.concat([pl.read_parquet(p) for p in parts], how="diagonal_relaxed")
                if isinstance(options, BarOptions):
                    frame = prepare_bars(raw, options, report, rename)
                    schema, freq, metadata = BARS, options.freq, bar_metadata(options, report)
                else:
                    frame = prepare_texts(raw, options, report, rename)
                    schema, freq, metadata = TEXT, None, text_metadata(options, report)
                result = transaction.write(schema, options.dataset, frame, freq=freq, metadata=metadata, policy=policy)
                record_write(report, result)
                total.add(result)
            refuse_changes(policy, total, report)
        return report
    finally:
        remove_staging(staging)


def _spill(
    file: Path, target: Path, buckets: int, aliases: Mapping[str, str], mapping: Mapping[str, str], by_symbol: bool
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Stream one file into `target/__bucket=K/*.parquet` with canonical names, `_file` and `_row`; bars get the
    symbol from the file's name when it has no symbol column and are bucketed by symbol (texts by row). Returns the
    rename {canonical: theirs} and the unmapped columns."""
    label = str(file)
    if file.stat().st_size == 0:
        raise DataValidationError("file is empty", file=label)
    parquet = file.suffix.lower() in PARQUET_SUFFIXES
    if parquet:
        try:
            columns = list(pl.read_parquet_schema(file))
        except Exception:  # pyarrow and polars raise many types for corrupt files; read_file names the problem
            read_file(file, aliases=aliases, mapping=mapping)
            raise
    else:
        separator = "\t" if file.suffix.lower() == ".tsv" else ","
        columns = [n.strip().strip('"') for n in csv_header(file).decode("utf-8").split(separator)]
    renames, dropped = column_renames(columns, aliases, mapping, label)
    rename = {ours: theirs for theirs, ours in renames.items()}
    numeric = numeric_columns(renames)

    def scan(typed: bool) -> pl.LazyFrame:
        if parquet:
            return pl.scan_parquet(file)
        overrides = dict.fromkeys(numeric, pl.Float64) if typed else None
        return pl.scan_csv(file, infer_schema=False, schema_overrides=overrides, separator=separator)

    def sink(frame: pl.LazyFrame) -> None:
        frame = frame.select(list(renames)).rename(renames).with_row_index(SOURCE_ROW, offset=1)
        frame = frame.with_columns(pl.col(SOURCE_ROW).cast(pl.Int64), pl.lit(label).alias(SOURCE_FILE))
        if by_symbol and "symbol" not in renames.values():
            frame = frame.with_columns(pl.lit(file_stem(file)).alias("symbol"))
        spread = pl.col("symbol") if by_symbol else pl.col(SOURCE_ROW)
        frame = frame.with_columns((spread.hash(seed=0) % buckets).alias(BUCKET))
        frame.sink_parquet(pl.PartitionBy(target, key=BUCKET, include_key=False), mkdir=True)

    try:
        sink(scan(typed=not parquet))
    except pl.exceptions.PolarsError:
        if parquet:
            read_file(file, aliases=aliases, mapping=mapping)  # raises the located problem
            raise
        try:  # a value that is not a plain number: read as text; prepare_bars names its row
            sink(scan(typed=False))
        except pl.exceptions.PolarsError:
            read_file(file, aliases=aliases, mapping=mapping)  # raises the located problem (bytes, ragged rows)
            raise
    written = sorted(target.rglob("*.parquet"))
    if not written or not pl.scan_parquet(written).select(pl.len()).collect().item():
        raise DataValidationError("file has a header but no data rows", file=label)
    return rename, dropped
