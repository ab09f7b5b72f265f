"""Experiment tracking with MLflow: every `train`, `evaluate`, `sweep` and serve job run by a command is an MLflow run
with its resolved config (flattened params and `config.yaml`), per-epoch metrics, final metrics and artifacts.

Commands switch tracking on for their duration with `tracking(root)`; the code below them opens runs with
`tracked_run(...)`, which nests under a run already open (the folds of one evaluation, the trials of a sweep) and is
a no-op when no command switched tracking on (library calls and unit tests stay untracked and never import mlflow).

The store is `MLFLOW_TRACKING_URI` when set, else a local SQLite store with its artifacts in `ROOT/mlflow/` (ROOT: the
folder holding the run folders, `runs/` by default), opened with `mlflow ui --backend-store-uri
sqlite:///runs/mlflow/mlflow.db`. `FINFUSION_TRACKING=off` switches tracking off. Creating a store is serialised by
a file lock, so several processes (the workers of one sweep) can start on the same new store.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from finfusion.config import plain
from finfusion.errors import FinfusionError

STORE_DIR = "mlflow"
STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "artifacts"
SWITCH = "FINFUSION_TRACKING"
#: MLflow keeps a param value up to this many characters.
PARAM_CHARS = 6000
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. :/]")


@dataclass(frozen=True)
class Store:
    """Where tracked runs go: a tracking URI and, for a local store, the artifact location of new experiments."""

    uri: str
    artifacts: str | None


_STORE: ContextVar[Store | None] = ContextVar("finfusion_tracking_store", default=None)


def store_for(root: str | Path) -> Store:
    """`MLFLOW_TRACKING_URI` when set, else the local store under `root/mlflow/`."""
    given = os.environ.get("MLFLOW_TRACKING_URI")
    if given:
        return Store(given, None)
    folder = Path(root).resolve() / STORE_DIR
    return Store(f"sqlite:///{folder / STORE_FILE}", (folder / ARTIFACT_DIR).as_uri())


def switched_off() -> bool:
    value = os.environ.get(SWITCH, "on").strip().lower()
    if value not in {"on", "off", "1", "0", "true", "false"}:
        raise FinfusionError(f"{SWITCH}: '{value}' is not one of on, off")
    return value in {"off", "0", "false"}


@contextmanager
def tracking(root: str | Path) -> Iterator[Store | None]:
    """Track the runs opened inside (see the module docstring); yields the store, or None when switched off."""
    if switched_off():
        yield None
        return
    store = store_for(root)
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)


def _mlflow() -> Any:
    import logging
    import warnings

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its table-creation notices are not about the run
    warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated")  # inside mlflow
    return mlflow


def _experiment(mlflow: Any, store: Store, name: str) -> str:
    """The experiment `name` in `store` (created when missing, under a file lock for a local store)."""
    mlflow.set_tracking_uri(store.uri)
    if store.artifacts is None:
        return mlflow.set_experiment(name).experiment_id
    folder = Path(store.uri.removeprefix("sqlite:///")).parent
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return mlflow.create_experiment(name, artifact_location=f"{store.artifacts}/{name}")


def flat_params(cfg: Mapping[str, Any] | DictConfig) -> dict[str, str]:
    """A config as MLflow params: dotted keys, each value as text (lists as YAML flow text)."""
    params: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            params[prefix] = str(node)[:PARAM_CHARS]

    walk(plain(cfg), "")
    return params


@dataclass(frozen=True)
class TrackedRun:
    """An open MLflow run: log metrics and artifacts to it."""

    run_id: str

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Numeric metrics (names with characters MLflow refuses get "_" in their place; NaN kept as NaN)."""
        numbers = {
            _METRIC_NAME.sub("_", name): float(value)
            for name, value in metrics.items()
            if isinstance(value, int | float)
        }
        if numbers:
            _mlflow().log_metrics(numbers, step=step, run_id=self.run_id)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        """A file or a folder (its files) as artifacts; a path that does not exist is skipped."""
        target = Path(path)
        client = _mlflow().MlflowClient()
        if target.is_dir():
            client.log_artifacts(self.run_id, str(target), folder or target.name)
        elif target.is_file():
            client.log_artifact(self.run_id, str(target), folder)

    def log_text(self, text: str, name: str) -> None:
        _mlflow().MlflowClient().log_text(self.run_id, text, name)


#: The run folder being trained and its tracked run (`training_run`).
_TRAINING: ContextVar[tuple[Path, TrackedRun] | None] = ContextVar("finfusion_training_run", default=None)


@contextmanager
def tracked_run(
    kind: str, name: str, cfg: Mapping[str, Any] | DictConfig | None = None, experiment: str | None = None
) -> Iterator[TrackedRun | None]:
    """An MLflow run named "`kind` `name`" while tracking is on (nested under the open run, if any), with `cfg`'s
    params and `config.yaml`; yields None when tracking is off. A run that raises ends as FAILED."""
    store = _STORE.get()
    if store is None:
        yield None
        return
    mlflow = _mlflow()
    parent = mlflow.active_run()
    if parent is None:
        title = experiment or (str(cfg.get("name")) if cfg is not None and cfg.get("name") else "finfusion")
        experiment_id = _experiment(mlflow, store, title)
    else:
        experiment_id = parent.info.experiment_id
    tags = {"finfusion.kind": kind}
    with mlflow.start_run(
        run_name=f"{kind} {name}", experiment_id=experiment_id, nested=parent is not None, tags=tags
    ) as run:
        tracked = TrackedRun(run.info.run_id)
        if cfg is not None:
            mlflow.log_params(flat_params(cfg))
            resolved = OmegaConf.create(plain(cfg))
            tracked.log_text(OmegaConf.to_yaml(resolved), "config.yaml")
        yield tracked


def active_run() -> TrackedRun | None:
    """The open tracked run, if tracking is on and a run is open."""
    if _STORE.get() is None or "mlflow" not in sys.modules:
        return None
    run = _mlflow().active_run()
    return None if run is None else TrackedRun(run.info.run_id)


@contextmanager
def training_run(run_dir: Path, cfg: Mapping[str, Any] | DictConfig) -> Iterator[TrackedRun | None]:
    """The tracked run of training `cfg` into `run_dir`: the one already open for that folder (`train_run` opens it,
    so the run folder is logged after the fit), else a new one, named by the folder (with its parent's name when
    nested: "patchtst/fold_0")."""
    folder = Path(run_dir).resolve()
    opened = _TRAINING.get()
    if opened is not None and opened[0] == folder:
        yield opened[1]
        return
    name = folder.name if active_run() is None else f"{folder.parent.name}/{folder.name}"
    with tracked_run("train", name, cfg) as tracked:
        token = _TRAINING.set(None if tracked is None else (folder, tracked))
        try:
            yield tracked
        finally:
            _TRAINING.reset(token)
