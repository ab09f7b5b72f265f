"""Build the `model` part of an experiment for its data, and save / load what a fitted model learned.

The part names a registered model and its arguments; the data fills the arguments it determines when the model's
constructor takes them and the part leaves them out: `n_channels` (C), `target_index` (positions of the targets
among the inputs), `context_length` (L) and `horizon` (H).

Saved state (never pickled): neural models as `model.safetensors` (their `state_dict`), LightGBM as its text model
format in `model.lightgbm.json`; closed-form baselines have nothing to save.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from finfusion.data.atomic import atomic_path
from finfusion.experiment.data import ExperimentData
from finfusion.models.base import Capabilities
from finfusion.models.lightgbm_baseline import LightGBMForecaster
from finfusion.models.registry import model_class

WEIGHTS_FILE = "model.safetensors"
#: A model part may carry task settings it needs (e.g. `task: {loss: model}`); they override the experiment's.
TASK_KEY = "task"
LIGHTGBM_FILE = "model.lightgbm.json"


def plain(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A plain dict of a config node."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_experiment_model(model_cfg: Mapping[str, Any] | DictConfig, data: ExperimentData) -> Capabilities:
    """The model named `model_cfg["name"]` with the other keys as arguments, completed from `data`."""
    options = plain(model_cfg)
    options.pop(TASK_KEY, None)
    cls = model_class(str(options.pop("name")))
    accepted = inspect.signature(cls.__init__).parameters
    derived = {
        "n_channels": data.n_channels,
        "target_index": data.target_index,
        "context_length": data.config.lookback,
        "horizon": data.config.horizon,
    }
    for key, value in derived.items():
        if key in accepted and key not in options:
            options[key] = value
    return cls(**options)


def save_model_state(model: Capabilities, run_dir: Path) -> Path | None:
    """Write what `model` learned into `run_dir`; returns the file (None for a model with no state)."""
    if isinstance(model, nn.Module):
        path = run_dir / WEIGHTS_FILE
        state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp))
        return path
    if isinstance(model, LightGBMForecaster):
        return model.save(run_dir / LIGHTGBM_FILE)
    return None


def load_model_state(model: Capabilities, run_dir: Path) -> Capabilities:
    """Restore what `save_model_state` wrote for `model` (strict: every tensor must match)."""
    if isinstance(model, nn.Module):
        model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILE)), strict=True)
        model.eval()
    elif isinstance(model, LightGBMForecaster):
        model.load(run_dir / LIGHTGBM_FILE)
    return model
