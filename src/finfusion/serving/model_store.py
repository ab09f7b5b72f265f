"""Versions of a named model under one store root, and the pointer to the version being served.

Layout:

    STORE/NAME/versions/20240601T120000.123456Z/model.safetensors   the state dict (tensors only, never pickled)
    STORE/NAME/versions/20240601T120000.123456Z/config.yaml         what the model was built from
    STORE/NAME/versions/20240601T120000.123456Z/metrics.json        e.g. {"val_loss": 0.41}
    STORE/NAME/versions/20240601T120000.123456Z/version.json        created_at, kind, parent, data, note, status*
    STORE/NAME/current                                               the served version's id
    STORE/NAME/promoted/20240601T120000.123456Z                      marks a version that has been served
    STORE/_staging/<id>/                                             a writer's work in progress (see `staging`)

    * only "rejected": see below.

A version is written into a staging folder and renamed into place, so a crash never leaves half a version; the
`current` pointer is switched by writing a staging file and renaming it over the old one. Versions are never
deleted or changed: promoting another one only moves the pointer, so the previous ones stay with their timestamps.

A version's status is never stored as "promoted" (a kill between saving a version and moving the pointer would
leave it claimed): it is "promoted" when the pointer names it or once named it (its `promoted/` mark, written after
the pointer moved, and again for the outgoing version before the pointer moves), "rejected" when its info says so
(a finetune that did not improve, decided before it was saved), and "candidate" otherwise.

Every writer works in a folder of its own under `STORE/_staging`, locked (flock) while it lives: a version before
its rename, the pointer before its rename, a training run (serving/family_steps.py). A process killed there leaves
its folder behind with the lock released by the OS; the next writer to open a staging folder removes it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import load_file, save_file

from finfusion.data.atomic import write_json_atomic
from finfusion.data.lake import check_name
from finfusion.errors import FinfusionError

VERSIONS_DIR = "versions"
CURRENT_FILE = "current"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
INFO_FILE = "version.json"
PROMOTED_DIR = "promoted"
STAGING_DIR = "_staging"
LOCK_FILE = ".lock"
#: A version's status ("promoted" is never stored; see the module docstring).
PROMOTED, REJECTED, CANDIDATE = "promoted", "rejected", "candidate"
VERSION_FORMAT = "%Y%m%dT%H%M%S.%fZ"
VERSION_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")


class ModelStoreError(FinfusionError):
    """The model store is missing something asked for (a version, a current version) or holds a broken version."""


@dataclass(frozen=True)
class VersionInfo:
    """What the store knows of one version (not its tensors); `info["status"]` is its status as the pointer and the
    promotion marks tell it (see the module docstring)."""

    version: str
    created_at: datetime
    metrics: dict[str, float | None]
    info: dict[str, Any]
    current: bool


@dataclass(frozen=True)
class StoredModel:
    """A loaded version: its id, state dict, config and metrics."""

    version: str
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    metrics: dict[str, float | None]


def check_version(version: str) -> str:
    """`version` if it is a version id (UTC timestamp like 20240601T120000.123456Z), else ModelStoreError."""
    if not VERSION_RE.match(version):
        raise ModelStoreError(
            f"invalid model version '{version}': expected a UTC timestamp like 20240601T120000.123456Z"
        )
    return version


class ModelStore:
    """The versions of model `name` under `root`. `clock` gives the UTC instant that names a new version."""

    def __init__(self, root: str | Path, name: str, *, clock: Callable[[], datetime] | None = None) -> None:
        self.root = Path(root)
        self.name = check_name(name, "model")
        self.home = self.root / self.name
        self.versions_dir = self.home / VERSIONS_DIR
        self._clock = clock or (lambda: datetime.now(UTC))

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / check_version(version)

    def save_version(
        self,
        state_dict: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        metrics: Mapping[str, float | None],
        *,
        info: Mapping[str, Any] | None = None,
    ) -> str:
        """Write a new version (a candidate: `promote` serves it) and return its id. Non-finite metrics are stored
        as null.

        Raises ModelStoreError when the state dict holds something other than tensors, the config cannot be written
        as YAML, or `info` gives a status other than "rejected" (promotion is the pointer's, not the version's).
        """
        tensors = _tensors(state_dict)
        config_yaml = _yaml(config)
        clean_metrics = {str(k): _finite_or_none(v) for k, v in metrics.items()}
        status = (info or {}).get("status")
        if status not in (None, REJECTED):
            raise ModelStoreError(f"a saved version's status can only be '{REJECTED}', not '{status}'")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with staging(self.root) as work:
            folder = work / "version"
            folder.mkdir()
            save_file(tensors, str(folder / WEIGHTS_FILE))
            (folder / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
            created = self._clock().astimezone(UTC)
            for name in (WEIGHTS_FILE, CONFIG_FILE):
                _fsync(folder / name)
            write_json_atomic(folder / METRICS_FILE, clean_metrics)
            while True:
                version = created.strftime(VERSION_FORMAT)
                payload = {**dict(info or {}), "version": version, "created_at": created.isoformat()}
                write_json_atomic(folder / INFO_FILE, payload)
                try:
                    os.rename(folder, self.versions_dir / version)
                    return version
                except OSError:
                    if not (self.versions_dir / version).exists():
                        raise
                    created += timedelta(microseconds=1)

    def promote(self, version: str) -> None:
        """Serve `version` from now on (one atomic rename of the pointer); raises ModelStoreError when it does not
        exist. The outgoing version is marked promoted before the pointer moves, `version` after it."""
        self._require(version)
        previous = self.current_version()
        if previous is not None:
            self._mark_promoted(previous)
        with staging(self.root) as work:
            pointer = work / CURRENT_FILE
            pointer.write_text(version + "\n", encoding="utf-8")
            _fsync(pointer)
            os.replace(pointer, self.home / CURRENT_FILE)
        self._mark_promoted(version)

    def _mark_promoted(self, version: str) -> None:
        marks = self.home / PROMOTED_DIR
        marks.mkdir(exist_ok=True)
        (marks / version).touch()

    def current_version(self) -> str | None:
        path = self.home / CURRENT_FILE
        if not path.exists():
            return None
        return check_version(path.read_text(encoding="utf-8").strip())

    def list_versions(self) -> list[VersionInfo]:
        """Every complete version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        served = self._served()
        names = sorted(p.name for p in self.versions_dir.iterdir() if VERSION_RE.match(p.name))
        return [self._info(name, *served) for name in names]

    def version(self, version: str) -> VersionInfo:
        self._require(version)
        return self._info(version, *self._served())

    def _served(self) -> tuple[str | None, set[str]]:
        """(the current version, the versions marked promoted)."""
        marks = self.home / PROMOTED_DIR
        promoted = {p.name for p in marks.iterdir()} if marks.is_dir() else set()
        return self.current_version(), promoted

    def load_config(self, version: str) -> dict[str, Any]:
        path = self._require(version) / CONFIG_FILE
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}

    def load_state_dict(self, version: str | None = None) -> dict[str, torch.Tensor]:
        """The tensors of `version` (default: the current one), read from safetensors on the CPU."""
        return load_file(str(self._require(self._or_current(version)) / WEIGHTS_FILE), device="cpu")

    def load(self, version: str | None = None) -> StoredModel:
        """State dict, config and metrics of `version` (default: the current one)."""
        version = self._or_current(version)
        return StoredModel(
            version=version,
            state_dict=self.load_state_dict(version),
            config=self.load_config(version),
            metrics=self.version(version).metrics,
        )

    def _or_current(self, version: str | None) -> str:
        if version is not None:
            return version
        current = self.current_version()
        if current is None:
            raise ModelStoreError(f"model '{self.name}' has no current version in {self.root}: train one first")
        return current

    def _require(self, version: str) -> Path:
        folder = self.version_dir(version)
        if not (folder / WEIGHTS_FILE).is_file():
            raise ModelStoreError(f"model '{self.name}' has no version '{version}' in {self.root}")
        return folder

    def _info(self, version: str, current: str | None, promoted: set[str]) -> VersionInfo:
        folder = self.versions_dir / version
        try:
            metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
            info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"model '{self.name}' version '{version}' is unreadable: {exc}") from exc
        if version == current or version in promoted:
            info["status"] = PROMOTED
        else:
            info["status"] = REJECTED if info.get("status") == REJECTED else CANDIDATE
        return VersionInfo(
            version=version,
            created_at=datetime.strptime(version, VERSION_FORMAT).replace(tzinfo=UTC),
            metrics=metrics,
            info=info,
            current=version == current,
        )


@contextmanager
def staging(root: str | Path) -> Iterator[Path]:
    """A new empty folder under `root/_staging`, locked while the block runs and removed after it; folders that
    processes left there when they died (their lock is free) are removed first."""
    area = Path(root) / STAGING_DIR
    area.mkdir(parents=True, exist_ok=True)
    with _flock(area / LOCK_FILE):
        for entry in area.iterdir():
            if entry.is_dir() and not _held(entry / LOCK_FILE):
                _remove_stale(entry)
        folder = area / uuid.uuid4().hex
        folder.mkdir()
        lock = open(folder / LOCK_FILE, "w")  # noqa: SIM115 - held until the folder is removed
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.close()


def _remove_stale(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise ModelStoreError(f"cannot remove {folder}, left by a writer that died: {exc}") from exc


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (waiting for it)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _held(path: Path) -> bool:
    """Whether a living process holds the lock on `path` (False when there is no such file)."""
    try:
        handle = open(path)  # noqa: SIM115 - closed below, which releases a lock taken here
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def _tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (safetensors refuses tensors that share memory, e.g. tied weights)."""
    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ModelStoreError(f"state dict entry '{key}' is a {type(value).__name__}, not a tensor")
        out[str(key)] = value.detach().to("cpu").contiguous().clone()
    return out


def _yaml(config: Mapping[str, Any]) -> str:
    try:
        return OmegaConf.to_yaml(OmegaConf.create(dict(config)), resolve=True)
    except (OmegaConfBaseException, ValueError) as exc:
        raise ModelStoreError(f"model config cannot be stored as YAML: {exc}") from exc


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
