"""The Parquet lake: one root, hive-partitioned tables, schema-checked writes committed all at once.

Layout (partition columns live in the path, not in the files; see `commits` for the manifest and the log):

    ROOT/kind=bars/dataset=NAME/freq=1d/symbol=AAPL/part-00000042.parquet              daily and slower bars
    ROOT/kind=bars/dataset=NAME/freq=1m/symbol=AAPL/year=2014/part-00000042.parquet    intraday bars
    ROOT/kind=text/dataset=NAME/year=2014/part-00000042.parquet                         texts, events, later stages
    ROOT/_manifest.json, ROOT/_log/                                                    what is committed, and history

A write happens in a transaction: it groups the rows by partition, merges each group with the partition's committed
file (rows with the same key are replaced by the new ones, or refused, as the write's policy says), stages every
changed partition as a new file of the transaction's version, and commits them all at once. Re-writing the same rows
commits nothing (the lake stays byte-identical). A lock file serialises writers; readers never wait.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from finfusion.data import commits
from finfusion.data.atomic import temporary_sibling
from finfusion.data.calendar import parse_freq
from finfusion.data.commits import LakeState, TableChange, TableState
from finfusion.data.lake_root import ENV_LAKE as ENV_LAKE  # re-exported: callers import it with Lake
from finfusion.data.lake_root import resolve_root
from finfusion.data.ordering import strictly_ordered
from finfusion.data.schema import SCHEMAS, TableSchema
from finfusion.errors import LakeError

#: Threads writing a transaction's partition files.
WRITERS = min(8, os.cpu_count() or 1)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
SYMBOL_RE = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9._\-^=]{0,31}$")


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise LakeError(f"invalid {what} name '{value}': use letters, digits, '.', '_' or '-' (at most 64)")
    return value


@dataclass(frozen=True)
class WritePolicy:
    """How a write treats stored rows. `changes`: replace changed values ("update") or count them for the caller
    to refuse ("refuse"; the write still stages them, so the caller can report every one before aborting).
    `keep_stored`: a missing value in the new rows never replaces a stored one."""

    changes: Literal["update", "refuse"] = "update"
    keep_stored: bool = False


#: Derived tables (features, forecasts, tokens, ...) are recomputed: new values replace the stored ones.
DERIVED = WritePolicy()


@dataclass
class WriteResult:
    """What a write did: rows in the input, rows new to the lake, rows that replaced different values, stored values
    kept where the new rows had none, and the first changed row (for a refusal's message)."""

    rows: int = 0
    new_rows: int = 0
    updated_rows: int = 0
    kept_values: int = 0
    files_written: int = 0
    files_unchanged: int = 0
    partitions: list[str] = field(default_factory=list)
    first_change: str | None = None

    @property
    def unchanged_rows(self) -> int:
        return self.rows - self.new_rows - self.updated_rows

    def add(self, other: WriteResult) -> None:
        for name in ("rows", "new_rows", "updated_rows", "kept_values", "files_written", "files_unchanged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.partitions += other.partitions
        self.first_change = self.first_change or other.first_change


class Lake:
    """A Parquet lake under one root folder."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = resolve_root(root)
        self._cached: tuple[tuple[int, int, int], LakeState] | None = None

    def dataset_dir(self, kind: str, dataset: str, freq: str | None = None) -> Path:
        path = self.root / f"kind={check_name(kind, 'kind')}" / f"dataset={check_name(dataset, 'dataset')}"
        return path / f"freq={parse_freq(freq).label}" if freq is not None else path

    def table_key(self, kind: str, dataset: str, freq: str | None = None) -> str:
        """The table's folder relative to the root: 'kind=K/dataset=D[/freq=F]'."""
        return self.dataset_dir(kind, dataset, freq).relative_to(self.root).as_posix()

    @staticmethod
    def uses_year_partition(schema: TableSchema, freq: str | None) -> bool:
        """Daily per-symbol tables are one file per symbol; intraday ones and timed tables without a frequency
        (texts, events) are split by year; tables without a time column are not."""
        if schema.time_column is None:
            return False
        return not (freq is not None and parse_freq(freq).is_daily)

    def state(self) -> LakeState:
        """The committed state (re-read only when the manifest file changed)."""
        try:
            stat = os.stat(self.root / commits.MANIFEST_FILE)
        except FileNotFoundError:
            return commits.read_state(self.root)
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._cached is None or self._cached[0] != signature:
            self._cached = (signature, commits.read_state(self.root))
        return self._cached[1]

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the writers' lock, sweep what killed writers left, and commit everything written inside the block
        at once when it ends without an error (nothing of it otherwise)."""
        with self.lock():
            state = commits.read_state(self.root)
            commits.sweep(self.root, state)
            transaction = Transaction(self, state)
            try:
                yield transaction
            except BaseException:
                transaction.discard()
                raise
            transaction.commit()

    def write(
        self,
        schema: TableSchema,
        dataset: str,
        df: pl.DataFrame,
        *,
        freq: str | None = None,
        metadata: dict[str, Any] | None = None,
        policy: WritePolicy = DERIVED,
    ) -> WriteResult:
        """Merge `df` (already validated) into the dataset, in a transaction of its own."""
        with self.transaction() as transaction:
            return transaction.write(schema, dataset, df, freq=freq, metadata=metadata, policy=policy)

    def delete(self, kind: str, dataset: str, freq: str | None = None) -> list[str]:
        """Remove a dataset (every frequency of it when `freq` is None) in one commit; returns the tables removed.
        Their files stay until `vacuum`, so `rollback` brings them back."""
        with self.transaction() as transaction:
            keys = self._keys(transaction.tables, kind, dataset, freq)
            for key in keys:
                transaction.replace(key, None, "delete")
            return keys

    def rollback(self, kind: str, dataset: str, freq: str | None = None, *, version: int | None = None) -> int:
        """Restore a table as it was committed at `version` (default: before its latest change), as a new commit;
        returns the version restored."""
        key = self.table_key(kind, dataset, freq)
        with self.transaction() as transaction:
            changes = [entry["version"] for entry in commits.history(self.root, key)]
            if not changes:
                raise LakeError(f"{key} has no history to roll back")
            if version is None:
                if len(changes) < 2 and transaction.tables.get(key) is None:
                    raise LakeError(f"{key} has no earlier version")
                version = changes[-2] if len(changes) > 1 else 0
            if version < 0 or version > transaction.base.version:
                raise LakeError(f"version {version} is not in 0..{transaction.base.version}")
            transaction.replace(key, commits.state_at(self.root, key, version), "rollback", {"to_version": version})
            return version

    def vacuum(self, keep: int) -> int:
        """Remove the data files no version among the current one and the last `keep` commits uses; returns how many
        were removed."""
        if keep < 0:
            raise LakeError(f"--keep must be 0 or more, got {keep}")
        with self.transaction() as transaction:
            return commits.vacuum(self.root, transaction.base, keep)

    def history(self, kind: str, dataset: str, freq: str | None = None) -> list[dict[str, Any]]:
        """The commits that changed a table, oldest first (version, time, user, host, command, change)."""
        return commits.history(self.root, self.table_key(kind, dataset, freq))

    def _keys(self, tables: dict[str, TableState], kind: str, dataset: str, freq: str | None) -> list[str]:
        key = self.table_key(kind, dataset, freq)
        keys = sorted(k for k in tables if k == key or (freq is None and k.startswith(key + "/")))
        if not keys:
            raise LakeError(f"no {kind} dataset '{dataset}'" + (f" at freq {freq}" if freq else "") + " to delete")
        return keys

    def metadata(self, kind: str, dataset: str) -> dict[str, Any]:
        """The dataset's metadata (merged over its frequencies, listed under 'freqs'); {} when it does not exist."""
        key = self.table_key(kind, dataset)
        merged: dict[str, Any] = {}
        freqs = []
        for table_key, table in sorted(self.state().tables.items()):
            if table_key == key or table_key.startswith(key + "/freq="):
                merged.update(table.metadata)
                if table_key != key:
                    freqs.append(table_key.rsplit("=", 1)[1])
        if freqs:
            merged["freqs"] = sorted(freqs)
        return merged

    def datasets(self) -> list[tuple[str, str, str | None]]:
        """(kind, dataset, freq) of every committed dataset that holds files, sorted."""
        found = []
        for key, table in self.state().tables.items():
            if table.files:
                parts = [part.split("=", 1)[1] for part in key.split("/")]
                found.append((parts[0], parts[1], parts[2] if len(parts) > 2 else None))
        return sorted(found, key=lambda row: (row[0], row[1], row[2] or ""))

    def files(self, kind: str, dataset: str, freq: str | None = None) -> list[Path]:
        """The committed files of a dataset (of every frequency when `freq` is None and the kind has them), sorted."""
        key = self.table_key(kind, dataset, freq)
        paths = []
        for table_key, table in self.state().tables.items():
            if table_key == key or (freq is None and table_key.startswith(key + "/")):
                base = self.root / table_key
                paths += [base / partition / name for partition, name in table.files.items()]
        return sorted(paths)

    def symbols(self, kind: str, dataset: str, freq: str | None = None) -> list[str]:
        """The symbols of a symbol-partitioned dataset, sorted, read off its committed files' paths (no data read)."""
        found = {
            part.split("=", 1)[1]
            for path in self.files(kind, dataset, freq)
            for part in path.parent.parts
            if part.startswith("symbol=")
        }
        return sorted(found)

    def _partitions(
        self, kind: str, dataset: str, freq: str | None, symbols: list[str] | None
    ) -> list[tuple[Path, list[pl.Expr]]]:
        """The committed files of a dataset (those of `symbols` only, when given), each with the columns its
        partition path holds; raises LakeError when the dataset has no file."""
        schema = SCHEMAS.get(kind)
        files = self.files(kind, dataset, freq)
        if not files:
            raise LakeError(
                f"no {kind} dataset '{dataset}'" + (f" at freq {freq}" if freq else "") + f" in {self.root}"
            )
        base = self.dataset_dir(kind, dataset, freq)
        chosen = []
        for path in files:
            parts = dict(p.split("=", 1) for p in path.parent.relative_to(base).parts)
            if symbols is not None and "symbol" in parts and parts["symbol"] not in symbols:
                continue
            values = [pl.lit(parts[c]).alias(c) for c in (schema.partition_by if schema else ()) if c in parts]
            chosen.append((path, values))
        return chosen

    def scan(
        self, kind: str, dataset: str, *, freq: str | None = None, symbols: list[str] | None = None
    ) -> pl.LazyFrame:
        """A dataset (optionally some symbols) as a lazy scan of its committed files with their partition columns:
        filters and column selections reach the files, so only what a query keeps is read. Optional columns that
        older files lack read as null."""
        scans = [
            pl.scan_parquet(path).with_columns(values)
            for path, values in self._partitions(kind, dataset, freq, symbols)
        ]
        if not scans:
            raise LakeError(f"{kind} dataset '{dataset}' has no files for symbols {symbols}")
        schema = SCHEMAS.get(kind)
        scan = pl.concat(scans, how="diagonal_relaxed")  # files older than an optional column lack it
        return schema.with_absent(scan) if schema else scan

    def read(
        self,
        kind: str,
        dataset: str,
        *,
        freq: str | None = None,
        symbols: list[str] | None = None,
    ) -> pl.DataFrame:
        """A whole dataset (optionally some symbols) as one frame in schema column order (optional columns that
        older files lack as null)."""
        schema = SCHEMAS.get(kind)
        frames = [
            pl.read_parquet(path).with_columns(values)
            for path, values in self._partitions(kind, dataset, freq, symbols)
        ]
        if not frames:
            return schema.conform(pl.DataFrame()) if schema else pl.DataFrame()
        out = pl.concat(frames, how="diagonal_relaxed")  # files older than an optional column lack it
        if schema is not None:
            out = schema.with_absent(out)
            extra = [c for c in out.columns if c not in schema.names] if schema.extra_dtype is not None else []
            out = out.select([c for c in schema.names if c in out.columns] + extra)
            sort_cols = [c for c in (*schema.partition_by, schema.time_column or schema.key[0]) if c in out.columns]
            out = out.sort(sort_cols)
        return out


class Transaction:
    """Writes staged as files of version `base.version + 1`, committed together by `Lake.transaction`."""

    def __init__(self, lake: Lake, base: LakeState) -> None:
        self.lake = lake
        self.base = base
        self.version = base.version + 1
        self.tables: dict[str, TableState | None] = dict(base.tables)
        self.changes: dict[str, TableChange] = {}
        self.staged: dict[Path, None] = {}

    def write(
        self,
        schema: TableSchema,
        dataset: str,
        df: pl.DataFrame,
        *,
        freq: str | None = None,
        metadata: dict[str, Any] | None = None,
        policy: WritePolicy = DERIVED,
    ) -> WriteResult:
        """Merge `df` (already validated) into the dataset's partitions; staged until the transaction commits."""
        if schema.kind == "bars" and freq is None:
            raise LakeError("bars need a frequency (e.g. 1d or 1m)")
        table = schema.conform(df)
        key = self.lake.table_key(schema.kind, dataset, freq)
        current = self.tables.get(key)
        state = TableState(dict(current.files), dict(current.metadata), self.version) if current else None
        state = state or TableState({}, {}, self.version)
        year = self.lake.uses_year_partition(schema, freq)
        if year:
            table = table.with_columns(pl.col(schema.time_column).dt.year().alias("year"))
        part_cols = [*schema.partition_by, *(["year"] if year else [])]
        ordered = (
            schema.time_column is not None
            and strictly_ordered(table, [*part_cols, schema.time_column])
            and [k for k in schema.key if k not in part_cols] == [schema.time_column]
        )
        result = WriteResult(rows=table.height)
        base = self.lake.root / key
        groups = table.partition_by(part_cols, as_dict=True) if part_cols else {(): table}
        writes: list[tuple[Path, pl.DataFrame]] = []
        for values, part in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
            partition = "/".join(f"{c}={_partition_value(c, v)}" for c, v in zip(part_cols, values, strict=True))
            stored = base / partition / state.files[partition] if partition in state.files else None
            merged = _merge(schema, stored, part.drop(part_cols), ordered, policy, result, partition)
            result.partitions.append(f"{key}/{partition}".rstrip("/"))
            if merged is None:
                result.files_unchanged += 1
                continue
            target = base / partition / commits.part_name(self.version)
            writes.append((target, merged))
            self.staged[target] = None
            state.files[partition] = target.name
            result.files_written += 1
        with ThreadPoolExecutor(WRITERS) as pool:  # polars writes outside the GIL: partitions in parallel
            list(pool.map(_write_part, writes))
        if current is None and not result.files_written:
            return result
        new_metadata = {**state.metadata, **(metadata or {}), "kind": schema.kind, "dataset": dataset}
        if result.files_written or new_metadata != state.metadata:
            state.metadata = new_metadata
            self._record(key, state, result)
        return result

    def _record(self, key: str, state: TableState, result: WriteResult) -> None:
        self.tables[key] = state
        change = self.changes.get(key) or TableChange("write", state, {})
        counts = change.counts
        for name, value in (
            ("rows", result.rows), ("new_rows", result.new_rows), ("updated_rows", result.updated_rows),
            ("unchanged_rows", result.unchanged_rows), ("kept_values", result.kept_values),
        ):  # fmt: skip
            counts[name] = counts.get(name, 0) + value
        change.state = state
        self.changes[key] = change

    def replace(self, key: str, state: TableState | None, operation: str, detail: dict[str, Any] | None = None) -> None:
        """Set a whole table to `state` (None removes it) in this transaction."""
        if state is None:
            self.tables.pop(key, None)
        else:
            state = TableState(dict(state.files), dict(state.metadata), self.version)
            self.tables[key] = state
        self.changes[key] = TableChange(operation, state, {}, detail or {})

    def commit(self) -> None:
        """Make every staged write visible at once (nothing to do when nothing changed)."""
        if not self.changes:
            return
        for path in self.staged:
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        tables = {key: table for key, table in self.tables.items() if table is not None}
        commits.commit(self.lake.root, LakeState(self.version, tables), self.changes, commits.command_line())

    def discard(self) -> None:
        """Remove the files this transaction staged (a killed process leaves them to the next writer's sweep)."""
        for path in self.staged:
            path.unlink(missing_ok=True)
        for path in {p.parent for p in self.staged}:
            with _ignore_os_error():
                path.rmdir()


@contextmanager
def _ignore_os_error() -> Iterator[None]:
    try:
        yield
    except OSError:
        return


def _write_part(job: tuple[Path, pl.DataFrame]) -> None:
    """Write one staged partition file (through a temporary sibling, so a half-written file never has its name)."""
    target, frame = job
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    frame.write_parquet(tmp, compression="zstd", compression_level=1)
    os.replace(tmp, target)


def _merge(
    schema: TableSchema,
    stored: Path | None,
    rows: pl.DataFrame,
    ordered: bool,
    policy: WritePolicy,
    result: WriteResult,
    partition: str,
) -> pl.DataFrame | None:
    """The partition's rows after merging `rows` into the `stored` file (None when nothing would change); adds its
    counts to `result`."""
    key = [k for k in schema.key if k in rows.columns]
    sort_cols = list(dict.fromkeys([c for c in (schema.time_column, *key) if c is not None]))
    if not ordered:
        rows = rows.unique(subset=key, keep="last", maintain_order=True).sort(sort_cols)
    if stored is None:
        result.new_rows += rows.height
        return rows
    old = schema.with_absent(pl.read_parquet(stored))  # a column added since is null there: no change by itself
    if policy.keep_stored:
        rows = _keep_stored(rows, old, key, result)
    present = rows.join(old.select(key), on=key, how="semi", nulls_equal=True).sort(key)
    previous = old.join(present.select(key), on=key, how="semi", nulls_equal=True).sort(key)
    previous = previous.select([c for c in present.columns if c in previous.columns])
    changed = present.select(previous.columns).hash_rows() != previous.hash_rows()
    merged = pl.concat([old, rows], how="diagonal_relaxed").unique(subset=key, keep="last", maintain_order=True)
    merged = merged.sort(sort_cols)
    if merged.equals(old):
        return None
    result.new_rows += rows.height - present.height
    result.updated_rows += int(changed.sum())
    if result.first_change is None and changed.any():
        change = _describe_change(present.filter(changed).head(1), previous.filter(changed).head(1), key)
        result.first_change = f"{partition.replace('/', ', ').replace('=', ' ')}, {change}".lstrip(", ")
    return merged


def _keep_stored(rows: pl.DataFrame, old: pl.DataFrame, key: list[str], result: WriteResult) -> pl.DataFrame:
    """`rows` with each missing value taken from the stored row of the same key, counting the values kept."""
    values = [c for c in rows.columns if c not in key and c in old.columns]
    stored = old.select(*key, *(pl.col(c).alias(f"{c}__stored") for c in values))
    joined = rows.join(stored, on=key, how="left", nulls_equal=True, maintain_order="left")
    kept = joined.select(
        pl.sum_horizontal(
            *((pl.col(c).is_null() & pl.col(f"{c}__stored").is_not_null()).cast(pl.Int64) for c in values)
        ).sum()
    ).item()
    result.kept_values += int(kept or 0)
    return joined.select(
        *key,
        *(pl.coalesce(c, f"{c}__stored").alias(c) for c in values),
        *[c for c in rows.columns if c not in key and c not in values],
    ).select(rows.columns)


def _describe_change(new: pl.DataFrame, old: pl.DataFrame, key: list[str]) -> str:
    """'symbol AAA, ts 2020-01-02 21:00:00+00:00: close 10.0 -> 11.0' for the first changed row."""
    new_row, old_row = new.row(0, named=True), old.row(0, named=True)
    where = ", ".join(f"{k} {new_row[k]}" for k in key)
    fields = [c for c in old.columns if c not in key and new_row[c] != old_row[c]]
    what = "; ".join(f"{c} {old_row[c]} -> {new_row[c]}" for c in fields[:3])
    return f"{where}: {what}"


def _partition_value(column: str, value: object) -> str:
    text = str(value)
    if column == "symbol" and not SYMBOL_RE.match(text):
        raise LakeError(f"symbol '{text}' cannot name a partition: use letters, digits, '.', '_', '-', '^' or '='")
    return text
