"""Train one experiment: config in, a run folder out.

    RUN/config.yaml         the resolved config (`finfusion train --config RUN/config.yaml` repeats the run)
    RUN/checkpoints/        Lightning checkpoints (best-k and last.ckpt, the resume point) of neural models
    RUN/model.safetensors   the best weights (or model.lightgbm.json for LightGBM; nothing for closed-form models)
    RUN/train.json          the split instants, the best validation score and what was trained

Neural models train through the task named in `task` (training/tasks.py) and the trainer part; models that are not
trained by gradient descent are fitted in closed form on the training windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch import nn

from finfusion.config import save_config
from finfusion.data.atomic import write_json_atomic
from finfusion.errors import FinfusionError
from finfusion.experiment.data import ExperimentData, build_experiment_data
from finfusion.experiment.models import TASK_KEY, build_experiment_model, plain, save_model_state
from finfusion.experiment.predict import load_run
from finfusion.models.base import Capabilities
from finfusion.training.tasks import build_task
from finfusion.training.trainer import CONFIG_FILE, fit, resolve_precision, trainer_options

TRAIN_FILE = "train.json"
TASK_DEFAULTS: dict[str, Any] = {"name": "forecast"}


@dataclass
class TrainedModel:
    """A model fitted on `data.train` (weights of the best validation checkpoint for neural models)."""

    model: Capabilities
    data: ExperimentData
    best_checkpoint: Path | None
    best_score: float | None


def best_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model's weights in a Lightning checkpoint (keys without the task's `model.` prefix); weights only."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}


def task_settings(cfg: DictConfig) -> dict[str, Any]:
    """The task part, with the model part's own `task` settings on top; a model part that names another task
    replaces the experiment's task settings (e.g. a generative model inside a forecasting experiment)."""
    base = {**TASK_DEFAULTS, **plain(cfg.get("task", {}))}
    own = plain(cfg.model).get(TASK_KEY, {})
    return dict(own) if own.get("name", base["name"]) != base["name"] else {**base, **own}


def fit_model(
    cfg: DictConfig,
    data: ExperimentData,
    run_dir: Path,
    resume: str | Path | None = "auto",
    callbacks: Sequence[Callback] = (),
) -> TrainedModel:
    """Build the `model` part for `data` and fit it on `data.train` (validating on `data.val`); `callbacks` go to
    the Lightning Trainer of neural models. Seeds everything with the trainer's seed first, so that the model's
    initial weights are reproducible too."""
    L.seed_everything(int(trainer_options(cfg.get("trainer", {}))["seed"]), workers=True, verbose=False)
    model = build_experiment_model(cfg.model, data)
    if not model.trainable:
        model.fit(data.loader(data.train))
        return TrainedModel(model, data, None, None)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{type(model).__name__} is trainable but not an nn.Module")
    task = build_task(task_settings(cfg), plain(cfg.get("optim", {})), model)
    loaders = (data.loader(data.train, shuffle=True), data.loader(data.val) if len(data.val) else None)
    trainer: L.Trainer = fit(task, loaders, run_dir, cfg, resume=resume, callbacks=callbacks)
    callback = trainer.checkpoint_callback
    best = Path(callback.best_model_path) if callback is not None and callback.best_model_path else None
    if best is not None and best.is_file():
        model.load_state_dict(best_state_dict(best))
    score = callback.best_model_score if callback is not None else None
    model.eval()
    return TrainedModel(model, data, best, None if score is None else float(score))


def train_experiment(
    cfg: DictConfig,
    run_dir: str | Path,
    resume: str | Path | None = "auto",
    data: ExperimentData | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainedModel:
    """Train the experiment `cfg` into `run_dir` (see the module docstring); resumes from last.ckpt by default."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / CONFIG_FILE)
    data = data or build_experiment_data(cfg.data)
    trained = fit_model(cfg, data, run, resume, callbacks)
    save_model_state(trained.model, run)
    write_json_atomic(
        run / TRAIN_FILE,
        {
            "model": str(cfg.model.name),
            "train_end_us": data.train_end_us,
            "val_end_us": data.val_end_us,
            "windows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
            "best_checkpoint": None if trained.best_checkpoint is None else trained.best_checkpoint.name,
            "best_score": trained.best_score,
        },
    )
    return trained


def validate_run(
    run_dir: str | Path, checkpoint: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, float]:
    """The task's validation metrics of a trained run on its validation windows (no training): its best weights,
    or the weights of `checkpoint` (a Lightning checkpoint, read weights-only)."""
    cfg, data, model = load_run(run_dir, overrides)
    if not isinstance(model, nn.Module):
        raise FinfusionError(f"{cfg.model.name} is not trained by gradient descent: it has no validation loop")
    if checkpoint is not None:
        model.load_state_dict(best_state_dict(Path(checkpoint)))
    if len(data.val) == 0:
        raise FinfusionError("the run's split leaves no validation windows")
    task = build_task(task_settings(cfg), plain(cfg.get("optim", {})), model)
    options = trainer_options(cfg.get("trainer", {}))
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=options["accelerator"],
        precision=resolve_precision(options["precision"]),
    )
    (metrics,) = trainer.validate(task, data.loader(data.val), verbose=False)
    return {name: float(value) for name, value in metrics.items()}
