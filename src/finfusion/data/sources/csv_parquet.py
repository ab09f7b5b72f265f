"""CSV and Parquet files or folders as raw frames, with a column mapping for other people's names.

Every value is read as text (CSV) or as stored (Parquet); types are checked later by the ingest pipeline so that
errors can name the row. Problems with the file itself (empty, not UTF-8, ragged rows, corrupt Parquet) are
reported here with the file and line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from finfusion.data.schema import PROVENANCE_COLUMNS, SOURCE_FILE, SOURCE_ROW
from finfusion.data.timestamps import parse_instants
from finfusion.data.validate import fail_at, parse_numbers, require_columns
from finfusion.errors import DataValidationError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
NUMERIC_COLUMNS = frozenset({"open", "high", "low", "close", "volume", "adj_close", "adj_factor"})
PARQUET_SUFFIXES = (".parquet", ".pq")

#: Common spellings of canonical columns (compared case-insensitively, spaces and dashes as underscores).
BAR_ALIASES = {
    "date": "ts", "datetime": "ts", "timestamp": "ts", "time": "ts", "ts": "ts",
    "ticker": "symbol", "symbol": "symbol", "stock": "symbol",
    "open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume", "vol": "volume",
    "adj_close": "adj_close", "adjclose": "adj_close", "adjusted_close": "adj_close", "adj_factor": "adj_factor",
}  # fmt: skip
TEXT_ALIASES = {
    "published_at": "published_at", "date": "published_at", "datetime": "published_at", "timestamp": "published_at",
    "created_at": "published_at", "time": "published_at",
    "symbols": "symbols", "symbol": "symbols", "ticker": "symbols", "tickers": "symbols", "stock": "symbols",
    "title": "title", "headline": "title", "body": "body", "content": "body", "text": "body", "article": "body",
    "source": "source", "url": "url", "link": "url", "author": "author", "id": "id",
}  # fmt: skip


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """'THEIRS=OURS' pairs from the command line as {theirs: ours}."""
    mapping = {}
    for pair in pairs:
        theirs, sep, ours = pair.partition("=")
        if not sep or not theirs or not ours:
            raise DataValidationError(f"column mapping '{pair}' must look like THEIRS=OURS (e.g. Date=ts)")
        mapping[theirs] = ours
    return mapping


def list_files(path: Path) -> list[Path]:
    """The CSV/Parquet files at `path` (a file, or a folder searched recursively), sorted."""
    if not path.exists():
        raise DataValidationError("path does not exist", file=path)
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES)
    if not files:
        raise DataValidationError(
            f"no CSV or Parquet files under this folder ({', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})", file=path
        )
    return files


def read_raw(
    path: Path,
    *,
    aliases: Mapping[str, str],
    mapping: Mapping[str, str] | None = None,
    symbol_from_filename: bool = False,
    separator: str | None = None,
) -> tuple[pl.DataFrame, dict[str, str], tuple[str, ...]]:
    """All files at `path` as one raw frame with canonical names, the rename {canonical: the user's name}, and the
    files' columns that map to nothing (not stored; the ingest report lists them).

    CSV files that share a header are read together in one multi-threaded scan; any problem in such a group is then
    located file by file so the error names the file and row.
    """
    frames, rename, unmapped = [], {}, {}
    groups: dict[tuple[bytes, str], list[Path]] = {}
    for file in list_files(path):
        sep = separator or ("\t" if file.suffix.lower() == ".tsv" else ",")
        if file.suffix.lower() in PARQUET_SUFFIXES or file.stat().st_size == 0:
            frame, names, dropped = read_file(file, aliases=aliases, mapping=mapping or {}, separator=separator)
            frames.append(frame)
            rename.update(names)
            unmapped.update(dict.fromkeys(dropped))
        else:
            groups.setdefault((csv_header(file), sep), []).append(file)
    for (header, sep), files in groups.items():
        names = [n.strip().strip('"') for n in header.decode("utf-8", errors="replace").split(sep)]
        numeric = numeric_columns(column_renames(names, aliases, mapping or {}, str(files[0]))[0])
        group = read_csv_group(files, sep, numeric)
        frame, names, dropped = canonical_names(group, aliases, mapping or {}, str(files[0]))
        frames.append(frame)
        rename.update(names)
        unmapped.update(dict.fromkeys(dropped))
    raw = pl.concat(frames, how="diagonal_relaxed")
    if symbol_from_filename and "symbol" not in raw.columns:
        stems = {label: file_stem(Path(label)) for label in raw[SOURCE_FILE].unique().to_list()}
        raw = raw.with_columns(pl.col(SOURCE_FILE).replace_strict(stems, return_dtype=pl.String).alias("symbol"))
    return raw, rename, tuple(unmapped)


def csv_header(file: Path) -> bytes:
    """The first line of a CSV file; raises when it is not UTF-8 (polars would decode it lossily)."""
    with open(file, "rb") as handle:
        header = handle.readline().rstrip(b"\r\n")
    try:
        header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"header is not valid UTF-8 (byte {exc.start}); re-encode the file", file=file
        ) from exc
    return header


def read_csv_group(files: list[Path], separator: str, numeric: list[str]) -> pl.DataFrame:
    """Files with the same header as one frame with `_file` and `_row` (1-based data row within its file).

    Fast path: one multi-threaded scan that parses the numeric columns as it reads. Any problem (a value that is not
    a plain number, bad bytes, ragged rows, a file without rows) falls back to reading each file as text, where the
    checks of the ingest pipeline name the file, row and field.
    """
    try:
        frame = pl.scan_csv(
            [str(f) for f in files],
            infer_schema=False,
            schema_overrides=dict.fromkeys(numeric, pl.Float64),
            separator=separator,
            include_file_paths=SOURCE_FILE,
        ).collect()
    except pl.exceptions.PolarsError:
        frame = None
    if frame is not None and frame.height and frame[SOURCE_FILE].n_unique() == len(files):
        runs = frame[SOURCE_FILE].rle().struct.field("len").to_numpy()
        starts = np.repeat(np.cumsum(runs) - runs, runs)
        return frame.with_columns(pl.Series(SOURCE_ROW, np.arange(frame.height) - starts + 1))
    return pl.concat([_with_provenance(_read_csv(f, separator), str(f)) for f in files], how="diagonal_relaxed")


def _with_provenance(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    if frame.height == 0:
        raise DataValidationError("file has a header but no data rows", file=label)
    return frame.with_columns(pl.lit(label).alias(SOURCE_FILE), pl.int_range(1, frame.height + 1).alias(SOURCE_ROW))


def read_file(
    file: Path, *, aliases: Mapping[str, str] | None, mapping: Mapping[str, str], separator: str | None = None
) -> tuple[pl.DataFrame, dict[str, str], tuple[str, ...]]:
    """One file as a raw frame (text values for CSV) with `_file` and `_row`, renamed to canonical names (all
    columns kept under their own names when `aliases` is None), the rename and the columns not mapped."""
    label = str(file)
    if file.stat().st_size == 0:
        raise DataValidationError("file is empty", file=label)
    if file.suffix.lower() in PARQUET_SUFFIXES:
        try:
            frame = pl.read_parquet(file)
        except Exception as exc:  # pyarrow and polars raise many types for corrupt files
            raise DataValidationError(
                f"not a readable Parquet file ({exc.__class__.__name__}: {exc})", file=label
            ) from exc
    else:
        csv_header(file)
        frame = _read_csv(file, separator or ("\t" if file.suffix.lower() == ".tsv" else ","))
    frame = _with_provenance(frame, label)
    return canonical_names(frame, aliases, mapping, label) if aliases is not None else (frame, {}, ())


def _read_csv(file: Path, separator: str) -> pl.DataFrame:
    try:
        return pl.read_csv(file, infer_schema=False, separator=separator)
    except pl.exceptions.NoDataError as exc:
        raise DataValidationError("file is empty", file=file) from exc
    except pl.exceptions.ComputeError as exc:
        row, problem = _locate_csv_problem(file, separator)
        raise DataValidationError(problem or str(exc).splitlines()[0], file=file, row=row) from exc


def _locate_csv_problem(file: Path, separator: str) -> tuple[int | None, str | None]:
    """Slow path after a failed read: the first data row that is not UTF-8 or has the wrong number of fields."""
    raw = file.read_bytes()
    for number, line in enumerate(raw.splitlines(), start=0):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (number or None), f"not valid UTF-8 (byte {exc.start} of the line); re-encode the file as UTF-8"
    rows = csv.reader(io.StringIO(raw.decode("utf-8")), delimiter=separator)
    header = next(rows, [])
    for number, fields in enumerate(rows, start=1):
        if fields and len(fields) != len(header):
            return number, f"has {len(fields)} fields, the header has {len(header)}"
    return None, None


def canonical_names(
    frame: pl.DataFrame, aliases: Mapping[str, str], mapping: Mapping[str, str], label: str
) -> tuple[pl.DataFrame, dict[str, str], tuple[str, ...]]:
    """Rename columns: explicit mapping first, then aliases. Returns the frame, {canonical: original} and the
    columns that map to nothing (dropped)."""
    renames, dropped = column_renames(frame.columns, aliases, mapping, label)
    keep = [c for c in frame.columns if c in renames or c in PROVENANCE_COLUMNS]
    return frame.select(keep).rename(renames), {ours: theirs for theirs, ours in renames.items()}, dropped


def column_renames(
    columns: list[str], aliases: Mapping[str, str], mapping: Mapping[str, str], label: str
) -> tuple[dict[str, str], tuple[str, ...]]:
    """{their column: canonical name} (explicit mapping first, then aliases; the first column to claim a name wins)
    and the columns that map to nothing. Raises when a mapped column is not in the file."""
    renames: dict[str, str] = {}
    for column in columns:
        target = mapping.get(column) or aliases.get(_normalise(column))
        if target is None or target in renames.values():
            continue
        renames[column] = target
    for theirs in mapping:
        if theirs not in columns:
            raise DataValidationError(
                f"mapped column '{theirs}' is not in the file; it has {columns}", file=label, field=theirs
            )
    dropped = tuple(c for c in columns if c not in renames and c not in PROVENANCE_COLUMNS)
    return renames, dropped


def numeric_columns(renames: Mapping[str, str]) -> list[str]:
    """Their names of the columns that map to numeric canonical columns (prices, volume)."""
    return [theirs for theirs, ours in renames.items() if ours in NUMERIC_COLUMNS]


def _normalise(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def file_stem(file: Path) -> str:
    name = file.name
    for suffix in (".csv", ".tsv", ".txt", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return file.stem


def read_actions(path: Path) -> pl.DataFrame:
    """A corporate-actions file [symbol, ex_date, split_ratio, dividend] as [symbol, ex_ts, split_ratio, dividend].

    ex_ts is midnight UTC of the ex-date: before that session's bar closes and after the previous session's.
    """
    raw, rename, _ = read_raw(path, aliases={"symbol": "symbol", "ticker": "symbol", "ex_date": "ex_date",
                                          "date": "ex_date", "split_ratio": "split_ratio", "split": "split_ratio",
                                          "dividend": "dividend"})  # fmt: skip
    require_columns(raw, ["symbol", "ex_date"], str(path), rename)
    numbers = parse_numbers(raw, [c for c in ("split_ratio", "dividend") if c in raw.columns], rename)
    ex = parse_instants(numbers, "ex_date", tz="UTC", date_format=None, rename=rename)
    actions = numbers.with_columns(
        ex.alias("ex_ts"),
        (pl.col("split_ratio") if "split_ratio" in numbers.columns else pl.lit(1.0))
        .fill_null(1.0)
        .alias("split_ratio"),
        (pl.col("dividend") if "dividend" in numbers.columns else pl.lit(0.0)).fill_null(0.0).alias("dividend"),
    )
    fail_at(actions, pl.col("split_ratio") <= 0, "split_ratio", "split ratio {value} must be > 0", rename)
    fail_at(actions, pl.col("dividend") < 0, "dividend", "dividend {value} must be >= 0", rename)
    return actions.select("symbol", "ex_ts", "split_ratio", "dividend")
