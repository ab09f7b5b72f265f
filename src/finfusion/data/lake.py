"""The Parquet lake: one root, hive-partitioned tables, schema-checked atomic writes.

Layout (partition columns live in the path, not in the files):

    ROOT/kind=bars/dataset=NAME/freq=1d/symbol=AAPL/data.parquet              daily and slower bars
    ROOT/kind=bars/dataset=NAME/freq=1m/symbol=AAPL/year=2014/data.parquet    intraday bars
    ROOT/kind=text/dataset=NAME/year=2014/data.parquet                         texts, events, later stages
    ROOT/kind=KIND/dataset=NAME/_dataset.json                                  dataset metadata

A write groups the rows by partition, merges each group with the partition's current file (rows with the same key are
replaced by the new ones), writes every changed partition to a temporary file, and only when all are written renames
them into place. Re-writing the same rows leaves the files byte-identical (unchanged partitions are not rewritten).
A process-wide lock file serialises writers.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from finfusion.data.atomic import temporary_sibling, write_json_atomic
from finfusion.data.calendar import parse_freq
from finfusion.data.lake_root import ENV_LAKE as ENV_LAKE  # re-exported: callers import it with Lake
from finfusion.data.lake_root import resolve_root
from finfusion.data.ordering import strictly_ordered
from finfusion.data.schema import SCHEMAS, TableSchema
from finfusion.errors import LakeError

DATA_FILE = "data.parquet"
METADATA_FILE = "_dataset.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
SYMBOL_RE = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9._\-^=]{0,31}$")


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise LakeError(f"invalid {what} name '{value}': use letters, digits, '.', '_' or '-' (at most 64)")
    return value


@dataclass
class WriteResult:
    """What a write did: rows in the input, rows new to the lake, rows that replaced different values."""

    rows: int = 0
    new_rows: int = 0
    updated_rows: int = 0
    files_written: int = 0
    files_unchanged: int = 0
    partitions: list[str] = field(default_factory=list)


class Lake:
    """A Parquet lake under one root folder."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = resolve_root(root)

    def dataset_dir(self, kind: str, dataset: str, freq: str | None = None) -> Path:
        path = self.root / f"kind={check_name(kind, 'kind')}" / f"dataset={check_name(dataset, 'dataset')}"
        return path / f"freq={parse_freq(freq).label}" if freq is not None else path

    @staticmethod
    def uses_year_partition(schema: TableSchema, freq: str | None) -> bool:
        """Daily per-symbol tables are one file per symbol; intraday ones and timed tables without a frequency
        (texts, events) are split by year; tables without a time column are not."""
        if schema.time_column is None:
            return False
        return not (freq is not None and parse_freq(freq).is_daily)

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(
        self,
        schema: TableSchema,
        dataset: str,
        df: pl.DataFrame,
        *,
        freq: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Merge `df` (already validated) into the dataset; atomic across all partitions it touches."""
        if schema.kind == "bars" and freq is None:
            raise LakeError("bars need a frequency (e.g. 1d or 1m)")
        table = schema.conform(df)
        base = self.dataset_dir(schema.kind, dataset, freq)
        year = self.uses_year_partition(schema, freq)
        if year:
            table = table.with_columns(pl.col(schema.time_column).dt.year().alias("year"))
        part_cols = [*schema.partition_by, *(["year"] if year else [])]
        ordered = (
            schema.time_column is not None
            and strictly_ordered(table, [*part_cols, schema.time_column])
            and [k for k in schema.key if k not in part_cols] == [schema.time_column]
        )
        result = WriteResult(rows=table.height)
        staged: list[tuple[Path, Path]] = []
        with self.lock():
            try:
                groups = table.partition_by(part_cols, as_dict=True) if part_cols else {(): table}
                for values, part in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
                    target = base.joinpath(
                        *(f"{c}={_partition_value(c, v)}" for c, v in zip(part_cols, values, strict=True))
                    )
                    target = target / DATA_FILE
                    rows = part.drop(part_cols)
                    merged, new, updated = self._merge(schema, target, rows, ordered)
                    result.new_rows += new
                    result.updated_rows += updated
                    result.partitions.append(str(target.parent.relative_to(self.root)))
                    if merged is None:
                        result.files_unchanged += 1
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = temporary_sibling(target)
                    staged.append((tmp, target))
                    merged.write_parquet(tmp, compression="zstd", compression_level=1)
                for tmp, target in staged:
                    os.replace(tmp, target)
                    result.files_written += 1
                if metadata is not None:
                    self._update_metadata(schema.kind, dataset, freq, metadata)
            finally:
                for tmp, _ in staged:
                    tmp.unlink(missing_ok=True)
        return result

    def _merge(
        self, schema: TableSchema, target: Path, rows: pl.DataFrame, ordered: bool
    ) -> tuple[pl.DataFrame | None, int, int]:
        """(merged frame, or None when the file would not change; rows new to the lake; rows whose values changed)."""
        key = [k for k in schema.key if k in rows.columns]
        sort_cols = list(dict.fromkeys([c for c in (schema.time_column, *key) if c is not None]))
        if not ordered:
            rows = rows.unique(subset=key, keep="last", maintain_order=True).sort(sort_cols)
        if not target.exists():
            return rows, rows.height, 0
        old = pl.read_parquet(target)
        present = rows.join(old.select(key), on=key, how="semi", nulls_equal=True).sort(key)
        previous = old.join(present.select(key), on=key, how="semi", nulls_equal=True).sort(key)
        previous = previous.select([c for c in present.columns if c in previous.columns])
        updated = int((present.select(previous.columns).hash_rows() != previous.hash_rows()).sum())
        merged = pl.concat([old, rows], how="diagonal_relaxed").unique(subset=key, keep="last", maintain_order=True)
        merged = merged.sort(sort_cols)
        if merged.equals(old):
            return None, 0, 0
        return merged, rows.height - present.height, updated

    def _update_metadata(self, kind: str, dataset: str, freq: str | None, metadata: dict[str, Any]) -> None:
        path = self.dataset_dir(kind, dataset) / METADATA_FILE
        current = self.metadata(kind, dataset)
        merged = {**current, **metadata, "kind": kind, "dataset": dataset}
        if freq is not None:
            merged["freqs"] = sorted({*current.get("freqs", []), parse_freq(freq).label})
        if merged != current:
            write_json_atomic(path, merged)

    def metadata(self, kind: str, dataset: str) -> dict[str, Any]:
        path = self.dataset_dir(kind, dataset) / METADATA_FILE
        if not path.exists():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def datasets(self) -> list[tuple[str, str, str | None]]:
        """(kind, dataset, freq) of every dataset in the lake, sorted."""
        found: list[tuple[str, str, str | None]] = []
        for kind_dir in sorted(self.root.glob("kind=*")):
            kind = kind_dir.name.split("=", 1)[1]
            for ds_dir in sorted(kind_dir.glob("dataset=*")):
                dataset = ds_dir.name.split("=", 1)[1]
                freq_dirs = sorted(ds_dir.glob("freq=*"))
                if freq_dirs:
                    found.extend((kind, dataset, f.name.split("=", 1)[1]) for f in freq_dirs)
                elif any(ds_dir.rglob(DATA_FILE)):
                    found.append((kind, dataset, None))
        return found

    def files(self, kind: str, dataset: str, freq: str | None = None) -> list[Path]:
        base = self.dataset_dir(kind, dataset, freq)
        return sorted(base.rglob(DATA_FILE))

    def read(
        self,
        kind: str,
        dataset: str,
        *,
        freq: str | None = None,
        symbols: list[str] | None = None,
    ) -> pl.DataFrame:
        """A whole dataset (optionally some symbols) as one frame in schema column order."""
        schema = SCHEMAS.get(kind)
        files = self.files(kind, dataset, freq)
        if not files:
            raise LakeError(
                f"no {kind} dataset '{dataset}'" + (f" at freq {freq}" if freq else "") + f" in {self.root}"
            )
        base = self.dataset_dir(kind, dataset, freq)
        frames = []
        for path in files:
            parts = dict(p.split("=", 1) for p in path.parent.relative_to(base).parts)
            if symbols is not None and "symbol" in parts and parts["symbol"] not in symbols:
                continue
            frame = pl.read_parquet(path)
            partition_values = [
                pl.lit(parts[c]).alias(c) for c in (schema.partition_by if schema else ()) if c in parts
            ]
            frame = frame.with_columns(partition_values)
            frames.append(frame)
        if not frames:
            return schema.conform(pl.DataFrame()) if schema else pl.DataFrame()
        out = pl.concat(frames, how="vertical_relaxed")
        if schema is not None:
            extra = [c for c in out.columns if c not in schema.names] if schema.extra_dtype is not None else []
            out = out.select([c for c in schema.names if c in out.columns] + extra)
            sort_cols = [c for c in (*schema.partition_by, schema.time_column or schema.key[0]) if c in out.columns]
            out = out.sort(sort_cols)
        return out


def _partition_value(column: str, value: object) -> str:
    text = str(value)
    if column == "symbol" and not SYMBOL_RE.match(text):
        raise LakeError(f"symbol '{text}' cannot name a partition: use letters, digits, '.', '_', '-', '^' or '='")
    return text
