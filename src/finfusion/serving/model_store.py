"""Versions of a named model under one store root, and the pointer to the version being served.

Layout:

    STORE/NAME/versions/20240601T120000.123456Z/model.safetensors   the state dict (tensors only, never pickled)
    STORE/NAME/versions/20240601T120000.123456Z/config.yaml         what the model was built from
    STORE/NAME/versions/20240601T120000.123456Z/metrics.json        e.g. {"val_loss": 0.41}
    STORE/NAME/versions/20240601T120000.123456Z/version.json        created_at, kind, status, parent, data_end, note
    STORE/NAME/current                                               the served version's id

A version is written into a hidden temporary folder and renamed into place, so a crash never leaves half a version;
the `current` pointer is switched by writing a temporary file and renaming it over the old one. Versions are never
deleted or changed: promoting another one only moves the pointer, so the previous ones stay with their timestamps.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import load_file, save_file

from finfusion.data.atomic import atomic_path, write_json_atomic
from finfusion.data.lake import check_name
from finfusion.errors import FinfusionError

VERSIONS_DIR = "versions"
CURRENT_FILE = "current"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
INFO_FILE = "version.json"
VERSION_FORMAT = "%Y%m%dT%H%M%S.%fZ"
VERSION_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")


class ModelStoreError(FinfusionError):
    """The model store is missing something asked for (a version, a current version) or holds a broken version."""


@dataclass(frozen=True)
class VersionInfo:
    """What the store knows of one version (not its tensors)."""

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
        """Write a new version (not promoted) and return its id. Non-finite metrics are stored as null.

        Raises ModelStoreError when the state dict holds something other than tensors or the config cannot be
        written as YAML.
        """
        tensors = _tensors(state_dict)
        config_yaml = _yaml(config)
        clean_metrics = {str(k): _finite_or_none(v) for k, v in metrics.items()}
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.versions_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            save_file(tensors, str(staging / WEIGHTS_FILE))
            (staging / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
            created = self._clock().astimezone(UTC)
            for name in (WEIGHTS_FILE, CONFIG_FILE):
                _fsync(staging / name)
            write_json_atomic(staging / METRICS_FILE, clean_metrics)
            while True:
                version = created.strftime(VERSION_FORMAT)
                payload = {**dict(info or {}), "version": version, "created_at": created.isoformat()}
                write_json_atomic(staging / INFO_FILE, payload)
                try:
                    os.rename(staging, self.versions_dir / version)
                    return version
                except OSError:
                    if not (self.versions_dir / version).exists():
                        raise
                    created += timedelta(microseconds=1)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def promote(self, version: str) -> None:
        """Serve `version` from now on (one atomic rename); raises ModelStoreError when it does not exist."""
        self._require(version)
        with atomic_path(self.home / CURRENT_FILE) as tmp:
            tmp.write_text(version + "\n", encoding="utf-8")

    def current_version(self) -> str | None:
        path = self.home / CURRENT_FILE
        if not path.exists():
            return None
        return check_version(path.read_text(encoding="utf-8").strip())

    def list_versions(self) -> list[VersionInfo]:
        """Every complete version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        current = self.current_version()
        names = sorted(p.name for p in self.versions_dir.iterdir() if VERSION_RE.match(p.name))
        return [self._info(name, current) for name in names]

    def version(self, version: str) -> VersionInfo:
        self._require(version)
        return self._info(version, self.current_version())

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

    def _info(self, version: str, current: str | None) -> VersionInfo:
        folder = self.versions_dir / version
        try:
            metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
            info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"model '{self.name}' version '{version}' is unreadable: {exc}") from exc
        return VersionInfo(
            version=version,
            created_at=datetime.strptime(version, VERSION_FORMAT).replace(tzinfo=UTC),
            metrics=metrics,
            info=info,
            current=version == current,
        )


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
