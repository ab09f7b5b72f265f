"""The lake's commit log: which files are committed, who wrote what, and the versions a table can go back to.

A reader sees only committed files. Every write stages new, immutable data files named after the version it will
commit (`part-00000042.parquet`), then writes two small files, in this order:

    ROOT/_log/00000042.json     the commit record: who, when, and for every table it changed, the table's files,
                                metadata and row counts (new / updated / unchanged) after the commit
    ROOT/_manifest.json         every table's committed files and metadata; replacing it is the commit itself

A process killed anywhere before the manifest is replaced leaves only files of a version above the manifest's, which
no reader lists and the next writer removes (`sweep`). Files a later commit replaced stay on disk, so any earlier
version of a table can be restored (`rollback`) until `vacuum` removes them.

Why not Delta Lake or Iceberg: the lake's readers are polars, DuckDB and a few direct Parquet scans over hive
partitions, and its writers merge rows by key per partition; a manifest of ~100 lines of code gives the all-or-nothing
commit, history and rollback that were missing, without a second storage engine or its writer's own file layout.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finfusion.data.atomic import write_json_atomic
from finfusion.errors import LakeError

MANIFEST_FILE = "_manifest.json"
LOG_DIR = "_log"
STAGING_DIR = "_staging"
LEGACY_DATA_FILE = "data.parquet"
LEGACY_METADATA_FILE = "_dataset.json"
PART_RE = re.compile(r"^part-(\d{8})\.parquet$")
FORMAT = 1


def part_name(version: int) -> str:
    return f"part-{version:08d}.parquet"


@dataclass
class TableState:
    """A table's committed files {partition path ('' for none): file name} and metadata, as of `version`."""

    files: dict[str, str]
    metadata: dict[str, Any]
    version: int

    def as_dict(self) -> dict[str, Any]:
        return {"files": dict(sorted(self.files.items())), "metadata": self.metadata, "version": self.version}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TableState:
        return cls(dict(payload["files"]), dict(payload.get("metadata", {})), int(payload["version"]))


@dataclass
class LakeState:
    """The manifest: the lake's version and every committed table, keyed by its folder ('kind=K/dataset=D[/freq=F]')."""

    version: int = 0
    tables: dict[str, TableState] = field(default_factory=dict)


@dataclass
class TableChange:
    """What one commit did to one table. `state` is None when the commit removed the table."""

    operation: str
    state: TableState | None
    counts: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "state": self.state.as_dict() if self.state is not None else None,
            "counts": self.counts,
            **self.detail,
        }


def read_state(root: Path) -> LakeState:
    """The committed state of the lake at `root` (a lake written before the commit log is read as version 0)."""
    path = root / MANIFEST_FILE
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _legacy_state(root)
    except (OSError, ValueError) as exc:
        raise LakeError(f"{path}: the lake's manifest cannot be read ({exc})") from exc
    if payload.get("format") != FORMAT:
        raise LakeError(f"{path}: manifest format {payload.get('format')!r} is not {FORMAT}")
    tables = {key: TableState.from_dict(value) for key, value in payload["tables"].items()}
    return LakeState(int(payload["version"]), tables)


def _legacy_state(root: Path) -> LakeState:
    """A lake written before the commit log: its `data.parquet` files and `_dataset.json` metadata, as version 0."""
    tables: dict[str, TableState] = {}
    for path in sorted(root.glob(f"kind=*/dataset=*/**/{LEGACY_DATA_FILE}")):
        rel = path.parent.relative_to(root).parts
        depth = 3 if len(rel) > 2 and rel[2].startswith("freq=") else 2
        key = "/".join(rel[:depth])
        partition = "/".join(rel[depth:])
        if key not in tables:
            meta_path = root.joinpath(*rel[:2], LEGACY_METADATA_FILE)
            metadata = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
            metadata.pop("freqs", None)
            tables[key] = TableState({}, metadata, 0)
        tables[key].files[partition] = LEGACY_DATA_FILE
    return LakeState(0, tables)


def commit(root: Path, state: LakeState, changes: dict[str, TableChange], command: str) -> None:
    """Write the commit record of `state.version`, then the manifest (the commit point). Caller holds the lock."""
    record = {
        "version": state.version,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "user": _user(),
        "host": socket.gethostname(),
        "command": command,
        "tables": {key: change.as_dict() for key, change in sorted(changes.items())},
    }
    write_json_atomic(root / LOG_DIR / f"{state.version:08d}.json", record)
    manifest = {
        "format": FORMAT,
        "version": state.version,
        "tables": {key: table.as_dict() for key, table in sorted(state.tables.items())},
    }
    write_json_atomic(root / MANIFEST_FILE, manifest)
    _fsync_folder(root)


def history(root: Path, key: str) -> list[dict[str, Any]]:
    """The commit records that changed table `key`, oldest first, each reduced to that table's change."""
    entries = []
    folder = root / LOG_DIR
    committed = read_state(root).version
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if not path.stem.isdigit() or int(path.stem) > committed:
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        change = record["tables"].get(key)
        if change is not None:
            entries.append({k: v for k, v in record.items() if k != "tables"} | {"change": change})
    return entries


def state_at(root: Path, key: str, version: int) -> TableState | None:
    """Table `key` as committed at `version` (None when it did not exist then). Raises when its files are gone."""
    found: TableState | None = None
    for entry in history(root, key):
        if entry["version"] > version:
            break
        state = entry["change"]["state"]
        found = TableState.from_dict(state) if state is not None else None
    if found is not None:
        table_dir = root / key
        missing = [f"{p}/{n}".lstrip("/") for p, n in found.files.items() if not (table_dir / p / n).is_file()]
        if missing:
            raise LakeError(f"version {version} of {key} cannot be restored: {missing[0]} was removed by vacuum")
    return found


def vacuum(root: Path, state: LakeState, keep: int) -> int:
    """Remove data files that neither the manifest nor the last `keep` commit records use; returns how many. Versions
    older than those can no longer be restored (their records stay, so history still lists them). Caller holds the
    lock."""
    used = {f"{key}/{p}/{n}".replace("//", "/") for key, table in state.tables.items() for p, n in table.files.items()}
    folder = root / LOG_DIR
    records = sorted((p for p in folder.glob("*.json") if p.stem.isdigit()), reverse=True) if folder.is_dir() else []
    for path in records[:keep]:
        for key, change in json.loads(path.read_text(encoding="utf-8"))["tables"].items():
            files = (change.get("state") or {}).get("files", {})
            used |= {f"{key}/{p}/{n}".replace("//", "/") for p, n in files.items()}
    removed = 0
    for table_root in root.glob("kind=*"):
        for current, _, names in os.walk(table_root):
            for name in names:
                path = Path(current) / name
                if (PART_RE.match(name) or name == LEGACY_DATA_FILE) and path.relative_to(root).as_posix() not in used:
                    path.unlink()
                    removed += 1
    return removed


def sweep(root: Path, state: LakeState) -> int:
    """Remove what killed writers left (uncommitted parts, commit records and temporary files, staging folders of
    dead processes); returns how many entries were removed. Caller holds the lock."""
    removed = 0
    for path in _uncommitted(root, state.version):
        path.unlink(missing_ok=True)
        removed += 1
    staging = root / STAGING_DIR
    for folder in sorted(staging.iterdir()) if staging.is_dir() else []:
        if not _owner_alive(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    for folder in sorted(root.glob("kind=*"), reverse=True):
        removed += _remove_empty_folders(folder)
    return removed


def _uncommitted(root: Path, committed: int) -> list[Path]:
    """Temporary files, and parts and commit records of versions above `committed`."""
    found = [p for p in root.glob(".*.tmp") if p.is_file()]
    log = root / LOG_DIR
    if log.is_dir():
        found += [p for p in log.iterdir() if p.suffix == ".tmp" or (p.stem.isdigit() and int(p.stem) > committed)]
    for table_root in root.glob("kind=*"):
        for folder, _, names in os.walk(table_root):
            for name in names:
                match = PART_RE.match(name)
                if name.endswith(".tmp") or (match is not None and int(match.group(1)) > committed):
                    found.append(Path(folder) / name)
    return found


def _remove_empty_folders(folder: Path) -> int:
    removed = 0
    for path, dirs, files in os.walk(folder, topdown=False):
        if not dirs and not files:
            try:
                os.rmdir(path)
                removed += 1
            except OSError:
                continue
    return removed


def staging_folder(root: Path) -> Path:
    """A staging folder of this process (`ROOT/_staging/<pid>-<host>-<random>`), swept once the process is gone."""
    folder = root / STAGING_DIR / f"{os.getpid()}-{socket.gethostname()}-{os.urandom(4).hex()}"
    folder.mkdir(parents=True)
    return folder


def remove_staging(folder: Path) -> None:
    """Remove a staging folder, and `_staging/` itself once it is empty."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()


def _owner_alive(name: str) -> bool:
    """Whether the process that made staging folder `<pid>-<host>-<random>` still runs. A folder of another host
    is kept (its owner cannot be checked from here); one not named that way is not ours to keep."""
    pid, _, rest = name.partition("-")
    host = rest.rpartition("-")[0]
    if not pid.isdigit() or not host:
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def command_line() -> str:
    """The running command without its options' values (which may be secrets): e.g. 'finfusion data ingest'."""
    words = [Path(sys.argv[0]).name, *(a for a in sys.argv[1:3] if not a.startswith("-"))]
    return " ".join(words)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
