"""Build a registered model from its config part, check its inputs against the samples, save and load its state.

The one model builder of every family: the part names a registered model and its arguments; the family's data fills
the arguments it determines (`arguments`, e.g. n_channels C, context_length L, horizon H, text_dim D) when the
model's constructor takes them and the part leaves them out. The built model's declared inputs
(`Capabilities.required_inputs`) are checked against the keys the family's samples carry: a missing key is an error
that names it.

Saved state (never pickled): neural models as `model.safetensors` (their `state_dict`), LightGBM as its text model
format in `model.lightgbm.json`; closed-form baselines have nothing to save.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from finfusion.config import plain
from finfusion.data.atomic import atomic_path
from finfusion.errors import FinfusionError
from finfusion.models.base import Capabilities
from finfusion.models.registry import model_class

WEIGHTS_FILE = "model.safetensors"
LIGHTGBM_FILE = "model.lightgbm.json"
#: A model part may carry task settings it needs (e.g. `task: {loss: model}`); they override the experiment's.
TASK_KEY = "task"


def build_model(
    model_cfg: Mapping[str, Any] | DictConfig,
    arguments: Mapping[str, Any],
    sample_keys: frozenset[str] | None = None,
) -> Capabilities:
    """The model named `model_cfg["name"]` with the part's other keys, completed from `arguments`; when
    `sample_keys` is given, raises FinfusionError if the model reads a key the samples do not carry."""
    options = plain(model_cfg)
    options.pop(TASK_KEY, None)
    name = str(options.pop("name"))
    try:
        cls = model_class(name)
    except KeyError as exc:
        raise FinfusionError(exc.args[0]) from exc
    accepted = inspect.signature(cls.__init__).parameters
    for key, value in arguments.items():
        if key in accepted and key not in options:
            options[key] = value
    model = cls(**options)
    if sample_keys is not None:
        missing = sorted(model.required_inputs() - sample_keys)
        if missing:
            raise FinfusionError(
                f"model '{name}' reads '{missing[0]}', which this experiment's samples do not carry "
                f"(they carry {', '.join(sorted(sample_keys))})"
            )
    return model


def save_model_state(model: Capabilities, run_dir: Path) -> Path | None:
    """Write what `model` learned into `run_dir`; returns the file (None for a model with no state)."""
    from safetensors.torch import save_model
    from torch import nn

    from finfusion.models.lightgbm_baseline import LightGBMForecaster

    if isinstance(model, nn.Module):
        path = run_dir / WEIGHTS_FILE
        with atomic_path(path) as tmp:
            save_model(model, str(tmp))  # a tensor shared by several names (tied embeddings) is stored once
        return path
    if isinstance(model, LightGBMForecaster):
        return model.save(run_dir / LIGHTGBM_FILE)
    return None


def load_model_state(model: Capabilities, run_dir: Path) -> Capabilities:
    """Restore what `save_model_state` wrote for `model` (strict: every tensor must match)."""
    from safetensors.torch import load_model
    from torch import nn

    from finfusion.models.lightgbm_baseline import LightGBMForecaster

    if isinstance(model, nn.Module):
        path = run_dir / WEIGHTS_FILE
        if not path.is_file():
            raise FinfusionError(f"{run_dir} has no {WEIGHTS_FILE}: train the run first")
        missing, unexpected = load_model(model, str(path), strict=False, device="cpu")
        if missing or unexpected:
            names = f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            raise FinfusionError(f"{path}: the weights do not match the model ({names})")
        model.eval()
    elif isinstance(model, LightGBMForecaster):
        model.load(run_dir / LIGHTGBM_FILE)
    return model
