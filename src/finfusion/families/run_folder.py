"""A run folder: everything a trained run needs to predict, written at training time and only read afterwards.

    RUN/config.yaml          the resolved config (`finfusion train --config RUN/config.yaml` repeats the run)
    RUN/model.safetensors    the best weights (model.lightgbm.json for LightGBM; nothing for closed-form baselines)
    RUN/state.json           what the family fitted on the training span: normalisers, split instants, the universe,
                             vocabularies and data-determined model arguments (`FamilyData.state`)
    RUN/metrics.json         the best checkpoint and its score, window counts, validation metrics of the weights
    RUN/checkpoints/         Lightning checkpoints (best-k and last.ckpt, the resume point) of neural models
    RUN/csv/, RUN/tensorboard/  training logs

Predict and validate read `state.json`; they never refit a normaliser or move a split on a lake that has grown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from finfusion.config import load_config, save_config
from finfusion.data.atomic import write_json_atomic
from finfusion.errors import FinfusionError

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"


def write_run(run_dir: Path, cfg: DictConfig, state: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Write the config, the fitted state and the metrics of a trained run (each file atomically)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE)
    write_json_atomic(run_dir / STATE_FILE, state)
    write_json_atomic(run_dir / METRICS_FILE, metrics)


def read_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The run's config (with `overrides`); raises FinfusionError when `run_dir` is not a run folder."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise FinfusionError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    return load_config(run_dir / CONFIG_FILE, overrides)


def read_json(run_dir: Path, name: str) -> dict[str, Any]:
    """A JSON file of the run; raises FinfusionError naming it when absent or not an object."""
    path = run_dir / name
    if not path.is_file():
        raise FinfusionError(f"{run_dir} has no {name}: it was not trained by `finfusion train` (or not finished)")
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict):
        raise FinfusionError(f"{path}: expected a JSON object")
    return payload
