"""Fit any model of any family: closed-form baselines in one call, neural models through their task and the one
Trainer path (`training/trainer.py`), keeping the best validation checkpoint's weights.

The task is named by the experiment's `task` part; a model part may carry task settings of its own under `task`
(e.g. `task: {loss: model}`), which win, and a model part that names another task replaces the experiment's task
settings (e.g. a generative model inside a forecasting experiment).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from finfusion.config import plain
from finfusion.models.base import Capabilities
from finfusion.models.build import TASK_KEY
from finfusion.training.epoch_metrics import EpochMetrics
from finfusion.training.tasks import build_task
from finfusion.training.tracking import training_run
from finfusion.training.trainer import FitResult, fit_task, trainer_options

TASK_DEFAULTS: dict[str, Any] = {"name": "forecast"}
Loader = Callable[..., DataLoader]


def task_settings(cfg: DictConfig) -> dict[str, Any]:
    """The experiment's `task` part with the model part's own `task` settings on top (see the module docstring)."""
    base = {**TASK_DEFAULTS, **plain(cfg.get("task"))}
    own = plain(cfg.model).get(TASK_KEY, {})
    return dict(own) if own.get("name", base["name"]) != base["name"] else {**base, **own}


def make_task(cfg: DictConfig, model: nn.Module) -> L.LightningModule:
    """The experiment's task around `model`, with its `optim` part."""
    return build_task(task_settings(cfg), plain(cfg.get("optim")), model)


def seed_everything(cfg: DictConfig) -> None:
    """Seed python, numpy and torch with the trainer part's seed (before a model is built: reproducible weights)."""
    L.seed_everything(int(trainer_options(cfg.get("trainer", {}))["seed"]), workers=True, verbose=False)


def fit_model(
    cfg: DictConfig,
    model: Capabilities,
    train: Dataset,
    val: Dataset,
    loader: Loader,
    run_dir: Path,
    resume: str | Path | None = "auto",
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Fit `model` on `train` (validating on `val`); `loader(dataset, shuffle=..., seed=...)` batches a dataset (the
    training batches are shuffled with the trainer's seed). Closed-form models are fitted in one pass over the
    training batches and have no checkpoint."""
    with training_run(run_dir, cfg) as tracked:
        if not model.trainable:
            model.fit(loader(train))
            return FitResult(None, None)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(model).__name__} is trainable but not an nn.Module")
        task = make_task(cfg, model)
        seed = int(trainer_options(cfg.get("trainer", {}))["seed"])
        loaders = (loader(train, shuffle=True, seed=seed), loader(val) if len(val) else None)
        epochs = [] if tracked is None else [EpochMetrics(tracked)]
        fitted = fit_task(task, loaders, run_dir, cfg, resume=resume, callbacks=[*callbacks, *epochs])
        if tracked is not None and fitted.best_score is not None:
            tracked.log_metrics({"best_score": fitted.best_score})
        return fitted
