"""`finfusion data ingest csv|parquet`: files or folders of bars or texts, streamed so that memory is bounded by a
bucket, not by the files.

Pass 1 reads every file in chunks (CSV: blocks of text cut at row ends outside quotes, parsed by polars; Parquet:
row batches) and splits the rows into buckets: bars by a hash of the symbol, so each symbol's rows land whole in one
bucket and in file order; texts by a hash of the row. Buckets stay in memory up to a budget and are spilled to the
ingest's staging folder beyond it. The number of buckets grows with the input's size (one per `bucket_bytes`).

Pass 2 validates and cleans one bucket at a time with the same `prepare_bars` / `prepare_texts` as every other source
and stages its partitions in one lake transaction: nothing is visible until every bucket passed, and a bad row
anywhere leaves the lake as it was. Peak memory is about one bucket plus the largest symbol, whatever the files'
length.

Hand-written because no library does validation-then-atomic-merge by bucket, and the streaming readers tried
(polars' `sink_parquet` with `PartitionBy`, pyarrow's `open_csv`) hold memory in proportion to the file.
"""

from __future__ import annotations

import copy
import fnmatch
import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

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
from finfusion.data.schema import BARS, SERIES, SOURCE_FILE, SOURCE_ROW, TEXT
from finfusion.data.series import SERIES_ALIASES, SeriesOptions, prepare_series, series_metadata
from finfusion.data.sources.csv_parquet import (
    BAR_ALIASES,
    PARQUET_SUFFIXES,
    TEXT_ALIASES,
    canonical_names,
    column_renames,
    csv_header,
    file_stem,
    list_files,
    numeric_columns,
    read_csv_group,
    read_file,
)
from finfusion.errors import DataValidationError

#: Input bytes per bucket: the unit of memory of pass 2.
BUCKET_BYTES = 16 << 20
#: Bytes of CSV text (rows of Parquet) read at a time, and the in-memory rows kept before spilling to disk (pass 1).
CHUNK_BYTES = 8 << 20
CHUNK_ROWS = 131_072
SPILL_BYTES = 64 << 20
BUCKET = "__bucket"
#: Canonical names of wide text columns while they are read: __wide_<rank> (melted into texts before pass 2).
WIDE_PREFIX = "__wide_"


@dataclass
class FileIngest:
    """Ingest a CSV/Parquet file or folder as bars or text with the given options (used directly and by archives)."""

    lake: Lake
    kind: str
    mapping: dict[str, str]
    bar_options: BarOptions
    text_options: TextOptions

    series_options: SeriesOptions | None = None
    symbols: SymbolNames | None = None
    rejects: Rejects | None = None
    #: texts: a glob of the columns that each hold one text of the row, in rank order (e.g. "Top*")
    wide_texts: str | None = None

    def __call__(self, path: Path, dataset: str) -> IngestReport:
        chosen = {"text": self.text_options, "series": self.series_options}.get(self.kind, self.bar_options)
        if chosen is None:
            raise DataValidationError(f"no options given to ingest {self.kind}")
        return ingest_files(
            self.lake,
            path,
            replace(chosen, dataset=dataset),
            mapping=self.mapping,
            symbols=self.symbols,
            rejects=self.rejects,
            wide_texts=self.wide_texts,
        )


def ingest_files(
    lake: Lake,
    path: Path,
    options: BarOptions | TextOptions | SeriesOptions,
    *,
    mapping: Mapping[str, str],
    bucket_bytes: int = BUCKET_BYTES,
    symbols: SymbolNames | None = None,
    rejects: Rejects | None = None,
    wide_texts: str | None = None,
) -> IngestReport:
    """Validate, clean and write the files at `path` (a file or folder) as bars or texts (by the options' type) of
    `options.dataset`, one bucket at a time, in one commit; returns the report."""
    bars = isinstance(options, BarOptions)
    kind = "bars" if bars else "series" if isinstance(options, SeriesOptions) else "text"
    aliases = {"bars": BAR_ALIASES, "text": TEXT_ALIASES, "series": SERIES_ALIASES}[kind]
    files = list_files(path)
    buckets = max(1, sum(f.stat().st_size for f in files) // bucket_bytes + 1)
    staging = staging_folder(lake.root)
    try:
        spill = Buckets(staging, buckets, aliases, mapping, by_symbol=bars, symbols=symbols, wide=wide_texts)
        for file in files:
            spill.read(file)
        spill.close()
        rename = spill.rename
        options = replace(options, unmapped=tuple(spill.unmapped))
        report = start_report(kind, options)
        policy = ingest_policy(options.update)
        total = WriteResult()
        with lake.transaction() as transaction:
            for bucket in range(buckets):
                raw = spill.bucket(bucket)
                if raw is None:
                    continue
                if isinstance(options, BarOptions):
                    frame = _prepared(raw, lambda part: prepare_bars(part, options, report, rename), report, rejects)
                    schema, freq, metadata = BARS, options.freq, bar_metadata(options, report)
                elif isinstance(options, SeriesOptions):
                    frame = _prepared(raw, lambda part: prepare_series(part, options, report, rename), report, rejects)
                    schema, freq, metadata = SERIES, None, series_metadata(options, report)
                else:
                    frame = _prepared(raw, lambda part: prepare_texts(part, options, report, rename), report, rejects)
                    schema, freq, metadata = TEXT, None, text_metadata(options, report)
                if frame is None:
                    continue
                result = transaction.write(schema, options.dataset, frame, freq=freq, metadata=metadata, policy=policy)
                record_write(report, result)
                total.add(result)
            refuse_changes(policy, total, report)
        if rejects is not None:
            report.count("rows rejected", len(rejects.rows))
            report.note(f"{len(rejects.rows):,} rejected rows with their reasons: {rejects.write()}")
        return report
    finally:
        remove_staging(staging)


@dataclass
class Rejects:
    """The `--rejects FILE` mode: a row that fails validation is set aside with its reason instead of stopping the
    ingest (the default stays all-or-nothing); up to `limit` rows, beyond which the input's layout, not a few rows,
    is wrong and the ingest stops as without the mode. `write()` writes FILE: file, row, field, reason."""

    path: Path
    limit: int = 10_000
    rows: list[DataValidationError] = field(default_factory=list)

    def add(self, error: DataValidationError) -> None:
        if len(self.rows) >= self.limit:
            raise DataValidationError(
                f"more than {self.limit:,} rows rejected (--rejects): the file's layout or mapping is probably "
                f"wrong; last: {error.message}",
                file=error.file,
                row=error.row,
                field=error.field,
            )
        self.rows.append(error)

    def write(self) -> Path:
        frame = pl.DataFrame(
            {
                "file": [e.file for e in self.rows],
                "row": [e.row for e in self.rows],
                "field": [e.field for e in self.rows],
                "reason": [e.message for e in self.rows],
            },
            schema={"file": pl.String, "row": pl.Int64, "field": pl.String, "reason": pl.String},
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        frame.sort("file", "row").write_csv(self.path)
        return self.path


def _prepared(
    raw: pl.DataFrame,
    prepare: Callable[[pl.DataFrame], pl.DataFrame],
    report: IngestReport,
    rejects: Rejects | None,
) -> pl.DataFrame | None:
    """`prepare(raw)`; in the rejects mode, a row it names as bad is set aside and the rest prepared again (the
    report's counts are those of the attempt that passed). None when every row was rejected."""
    if rejects is None:
        return prepare(raw)
    while True:
        before = copy.deepcopy(report)
        try:
            return prepare(raw)
        except DataValidationError as error:
            if error.row is None or error.file is None:
                raise
            report.__dict__.update(before.__dict__)
            rejects.add(error)
            bad = (pl.col(SOURCE_FILE) == error.file) & (pl.col(SOURCE_ROW) == error.row)
            kept = raw.filter(~bad)
            if kept.height == raw.height:  # the row it names is not one of these: nothing to set aside
                raise
            if kept.height == 0:
                return None
            raw = kept


@dataclass(frozen=True)
class SymbolNames:
    """How symbols are named on the way in: `constant` gives every row of the input that symbol (a file without a
    symbol column of its own); `case` "upper" or "lower" folds symbols from columns and file names alike, so that
    `aapl.csv` and a news file's `AAPL` name one symbol ("keep": as written)."""

    constant: str | None = None
    case: Literal["keep", "upper", "lower"] = "keep"


class Buckets:
    """Rows on their way to pass 2, by bucket, with canonical names, `_file` and `_row`. Bars get the symbol from the
    file's name when it has no symbol column and are bucketed by symbol, texts by row. Small CSV files are read
    together (one multi-threaded scan per group of SPILL_BYTES / 4), large ones and Parquet files chunk by chunk.
    Buckets stay in memory up to SPILL_BYTES, and are written to Parquet files under `folder` beyond it."""

    def __init__(
        self,
        folder: Path,
        count: int,
        aliases: Mapping[str, str],
        mapping: Mapping[str, str],
        *,
        by_symbol: bool,
        symbols: SymbolNames | None = None,
        wide: str | None = None,
    ) -> None:
        self.folder, self.count, self.aliases, self.mapping, self.by_symbol = folder, count, aliases, mapping, by_symbol
        self.symbols = symbols or SymbolNames()
        self.wide = wide
        self.symbol_column = "symbol" if by_symbol else "symbols"
        self.rename: dict[str, str] = {}
        self.unmapped: dict[str, None] = {}
        self.pending: dict[int, list[pl.DataFrame]] = {}
        self.size = 0
        self.flushes = 0
        self.groups: dict[tuple[bytes, str], list[Path]] = {}

    def read(self, file: Path) -> None:
        """Add one file's rows (small CSV files wait for their group)."""
        size = file.stat().st_size
        if size == 0:
            raise DataValidationError("file is empty", file=file)
        if file.suffix.lower() in PARQUET_SUFFIXES or size > CHUNK_BYTES:
            self._read_chunked(file)
            return
        separator = "\t" if file.suffix.lower() == ".tsv" else ","
        group = self.groups.setdefault((csv_header(file), separator), [])
        group.append(file)
        if sum(f.stat().st_size for f in group) > SPILL_BYTES // 4:
            self._read_group(group, separator)
            group.clear()

    def close(self) -> None:
        """Read the small files still waiting."""
        for (_, separator), group in self.groups.items():
            if group:
                self._read_group(group, separator)
        self.groups = {}

    def bucket(self, bucket: int) -> pl.DataFrame | None:
        """The bucket's rows in input order (None when it has none); its memory is released."""
        frames = [pl.read_parquet(p) for p in sorted(self.folder.glob(f"{BUCKET}={bucket}/*.parquet"))]
        frames += self.pending.pop(bucket, [])
        return pl.concat(frames, how="diagonal_relaxed") if frames else None

    def _read_group(self, files: list[Path], separator: str) -> None:
        header = csv_header(files[0])
        columns = [n.strip().strip('"') for n in header.decode("utf-8").split(separator)]
        mapping = self._mapping_for(columns, str(files[0]))
        renames, _ = column_renames(columns, self.aliases, mapping, str(files[0]))
        raw = read_csv_group(files, separator, numeric_columns(renames))
        frame, names, dropped = canonical_names(raw, self.aliases, mapping, str(files[0]))
        if self.symbols.constant is not None:
            frame = self._constant_symbol(frame, str(files[0]))
        elif self.by_symbol and "symbol" not in frame.columns:
            stems = {str(f): file_stem(f) for f in files}
            frame = frame.with_columns(
                pl.col(SOURCE_FILE).replace_strict(stems, return_dtype=pl.String).alias("symbol")
            )
        self._add(frame, names, dropped)

    def _mapping_for(self, columns: list[str], file: str) -> Mapping[str, str]:
        """The mapping, plus, with `--wide-texts PATTERN`, the matching columns as wide text columns in their order
        (a file without any, or with a title column besides them, is refused)."""
        if self.wide is None:
            return self.mapping
        matches = [column for column in columns if fnmatch.fnmatchcase(column, self.wide)]
        if not matches:
            raise DataValidationError(f"--wide-texts {self.wide} matches none of the columns {columns}", file=file)
        wide = {column: f"{WIDE_PREFIX}{rank}" for rank, column in enumerate(matches, start=1)}
        return {**self.mapping, **wide}

    def _melted(self, frame: pl.DataFrame, names: dict[str, str]) -> pl.DataFrame:
        """Wide text columns [title rank 1, 2, ...] -> one text per non-empty cell: title = the cell (byte-literal
        quotes b'...' taken off), source_ref = its column's name (the rank); empty cells are no text."""
        wide = [column for column in frame.columns if column.startswith(WIDE_PREFIX)]
        if not wide:
            return frame
        if "title" in frame.columns:
            raise DataValidationError("--wide-texts and a title column of its own: give one of them", field="title")
        melted = frame.unpivot(on=wide, index=[c for c in frame.columns if c not in wide], variable_name="source_ref",
                               value_name="title")  # fmt: skip
        theirs = {canonical: names[canonical] for canonical in wide}
        title = pl.col("title").cast(pl.String).str.strip_chars()
        unquoted = title.str.replace(r"""^b'(.*)'$|^b"(.*)"$""", "${1}${2}")
        return (
            melted.with_columns(unquoted.alias("title"), pl.col("source_ref").replace_strict(theirs))
            .filter(pl.col("title").fill_null("") != "")
            .sort(SOURCE_FILE, SOURCE_ROW, maintain_order=True)
        )

    def _constant_symbol(self, frame: pl.DataFrame, file: str) -> pl.DataFrame:
        """Every row of `frame` given the `--symbol` (a file with a symbol column of its own is ambiguous)."""
        if self.symbol_column in frame.columns:
            raise DataValidationError(
                f"--symbol {self.symbols.constant} given but the file has a symbol column of its own", file=file
            )
        return frame.with_columns(pl.lit(self.symbols.constant).alias(self.symbol_column))

    def _read_chunked(self, file: Path) -> None:
        label, rows = str(file), 0
        try:
            if file.suffix.lower() in PARQUET_SUFFIXES:
                source = pq.ParquetFile(file)
                mapping = self._mapping_for(source.schema_arrow.names, label)
                renames, dropped = column_renames(source.schema_arrow.names, self.aliases, mapping, label)
                batches = source.iter_batches(CHUNK_ROWS, columns=list(renames))
                chunks: Iterator[pl.DataFrame] = (pl.DataFrame(pl.from_arrow(batch)) for batch in batches)
            else:
                separator = "\t" if file.suffix.lower() == ".tsv" else ","
                header = csv_header(file)
                columns = [n.strip().strip('"') for n in header.decode("utf-8").split(separator)]
                mapping = self._mapping_for(columns, label)
                renames, dropped = column_renames(columns, self.aliases, mapping, label)
                chunks = _csv_chunks(file, header, separator, dict.fromkeys(numeric_columns(renames), pl.Float64))
            names = {ours: theirs for theirs, ours in renames.items()}
            for chunk in chunks:
                frame = chunk.select(list(renames)).rename(renames)
                frame = frame.with_columns(
                    pl.int_range(rows + 1, rows + 1 + frame.height, dtype=pl.Int64).alias(SOURCE_ROW),
                    pl.lit(label).alias(SOURCE_FILE),
                )
                rows += frame.height
                if self.symbols.constant is not None:
                    frame = self._constant_symbol(frame, label)
                elif self.by_symbol and "symbol" not in frame.columns:
                    frame = frame.with_columns(pl.lit(file_stem(file)).alias("symbol"))
                self._add(frame, names, dropped)
        except (pl.exceptions.PolarsError, pa.ArrowException, OSError):
            read_file(file, aliases=self.aliases, mapping=self.mapping)  # reads it whole to name the problem's row
            raise
        if rows == 0:
            raise DataValidationError("file has a header but no data rows", file=label)

    def _add(self, frame: pl.DataFrame, names: dict[str, str], dropped: tuple[str, ...]) -> None:
        frame = self._melted(frame, names)
        names = {ours: theirs for ours, theirs in names.items() if not ours.startswith(WIDE_PREFIX)}
        self.rename.update(names)
        self.unmapped.update(dict.fromkeys(dropped))
        if self.symbols.case != "keep" and self.symbol_column in frame.columns:
            column = pl.col(self.symbol_column).cast(pl.String)
            cased = column.str.to_uppercase() if self.symbols.case == "upper" else column.str.to_lowercase()
            frame = frame.with_columns(cased.alias(self.symbol_column))
        spread = pl.col("symbol") if self.by_symbol else pl.col(SOURCE_ROW)
        frame = frame.with_columns((spread.hash(seed=0) % self.count).alias(BUCKET))
        for (bucket,), part in frame.partition_by(BUCKET, as_dict=True, include_key=False).items():
            self.pending.setdefault(int(bucket), []).append(part)
            self.size += part.estimated_size()
        if self.size > SPILL_BYTES:
            self._flush()

    def _flush(self) -> None:
        for bucket, parts in self.pending.items():
            target = self.folder / f"{BUCKET}={bucket}" / f"{self.flushes:08d}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            pl.concat(parts, how="diagonal_relaxed").write_parquet(target, compression="lz4")
        self.pending, self.size = {}, 0
        self.flushes += 1


def _csv_chunks(
    file: Path, header: bytes, separator: str, typed: Mapping[str, type[pl.Float64]]
) -> Iterator[pl.DataFrame]:
    """The file's data rows as frames of about CHUNK_BYTES of text each, cut at row ends outside quotes."""
    with open(file, "rb") as handle:
        handle.readline()
        carry = b""
        while block := handle.read(CHUNK_BYTES):
            data = carry + block
            cut = _last_row_end(data)
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            yield _parse_csv(header, data[: cut + 1], separator, typed)
        if carry.strip():
            yield _parse_csv(header, carry, separator, typed)


def _parse_csv(header: bytes, rows: bytes, separator: str, typed: Mapping[str, type[pl.Float64]]) -> pl.DataFrame:
    """Rows of text under `header`: numeric columns parsed as read, or every column as text when a value is not a
    plain number (prepare_bars then names its row)."""
    text = header + b"\n" + rows
    try:
        return pl.read_csv(io.BytesIO(text), infer_schema=False, schema_overrides=dict(typed), separator=separator)
    except pl.exceptions.ComputeError:
        return pl.read_csv(io.BytesIO(text), infer_schema=False, separator=separator)


def _last_row_end(data: bytes) -> int:
    """The position of the last newline of `data` outside quotes (-1 when there is none)."""
    end = data.rfind(b"\n")
    if b'"' not in data:
        return end
    while end >= 0 and data.count(b'"', 0, end) % 2:
        end = data.rfind(b"\n", 0, end)
    return end
