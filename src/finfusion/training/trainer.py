"""The one Trainer path: every family fits, validates and predicts through the functions here, and `_trainer` is the
only place in finfusion that constructs a Lightning `Trainer`.

- `fit_task(task, loaders, run_dir, cfg)`: fit with best-k checkpoints and an exact resume after a crash (a run killed
  at any step and resumed ends with the uninterrupted run's weights: training/resume.py), then load the best
  checkpoint's weights (read weights-only) into the task's model;
- `validate_task(task, loader, cfg)`: the task's `val_*` metrics without training;
- `predict_task(task, loader, cfg)`: the task's `predict_step` outputs, batch by batch.

Output is quiet and honest: Lightning's advertising tip and third-party deprecation warnings are filtered, a rich
progress bar shows when stderr is a terminal and plain periodic lines when it is not (logs, CI), and a logger that a
config asks for but cannot be made is an error.

Run folder layout:

    RUN/config.yaml            the resolved experiment config (`finfusion train --config RUN/config.yaml` repeats it)
    RUN/checkpoints/           best-k checkpoints on the monitored metric, and last.ckpt (the one resume point)
    RUN/csv/, RUN/tensorboard/ logs (MLflow tracking of the commands that train: training/tracking.py)
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    RichProgressBar,
    StochasticWeightAveraging,
)
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from finfusion.config import plain, save_config
from finfusion.errors import FinfusionError
from finfusion.training.augmentation import AUGMENTATION_DEFAULTS, Augmentation
from finfusion.training.resume import (
    RESUME_KEYS,
    AtomicCheckpointIO,
    ExactResume,
    LastCheckpoint,
    ResumableBatches,
    check_weights,
    rank_and_world,
    read_checkpoint,
)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
CONFIG_FILE = "config.yaml"

#: The trainer part's keys and their defaults (configs/trainer/*.yaml set some of them).
TRAINER_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "deterministic": False,
    "max_epochs": 10,
    "max_steps": -1,
    "accelerator": "auto",
    "devices": 1,
    # Lightning strategies: auto, ddp (several processes; gloo on CPUs), fsdp, deepspeed, ...
    "strategy": "auto",
    "precision": "auto",
    "gradient_clip_val": 1.0,
    "gradient_clip_algorithm": "norm",
    "accumulate_grad_batches": 1,
    "limit_train_batches": None,
    "limit_val_batches": None,
    "val_check_interval": None,
    "check_val_every_n_epoch": 1,
    "log_every_n_steps": 10,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": True,
    "checkpoint": {"monitor": "val_loss", "mode": "min", "save_top_k": 3, "every_n_train_steps": None},
    "early_stopping": {"enabled": True, "monitor": "val_loss", "mode": "min", "patience": 5, "min_delta": 0.0},
    "swa": {"enabled": False, "swa_lrs": 1e-3, "swa_epoch_start": 0.8},
    # temporal mixup and feature noise on training batches only (training/augmentation.py)
    "augmentation": AUGMENTATION_DEFAULTS,
    "loggers": ["csv", "tensorboard"],
}

_PASSTHROUGH = (
    "max_epochs",
    "max_steps",
    "accelerator",
    "devices",
    "strategy",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
    "limit_train_batches",
    "limit_val_batches",
    "val_check_interval",
    "check_val_every_n_epoch",
    "log_every_n_steps",
    "num_sanity_val_steps",
    "deterministic",
)
#: Loggers a config may ask for.
LOGGERS = ("csv", "tensorboard")


def trainer_options(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The trainer part as a plain dict, with `TRAINER_DEFAULTS` filling what it leaves out."""
    given = plain(cfg)
    merged = OmegaConf.merge(OmegaConf.create(TRAINER_DEFAULTS), OmegaConf.create(given))
    return OmegaConf.to_container(merged, resolve=True)


def is_global_zero() -> bool:
    """True in the one process that writes a run's files: rank 0 of a distributed run, or a single process."""
    return rank_and_world()[0] == 0


def resolve_precision(requested: str | int) -> str:
    """ "bf16-mixed" only when CUDA is available (for "auto" or a bf16 request); "32-true" otherwise."""
    text = str(requested)
    if text == "auto" or text.startswith("bf16"):
        return "bf16-mixed" if torch.cuda.is_available() else "32-true"
    return text


def _loggers(options: Mapping[str, Any], run_dir: Path) -> list[Logger]:
    """The loggers of `trainer.loggers`; an unknown name or one whose library is missing is an error."""
    wanted = [str(name) for name in options["loggers"]]
    unknown = [name for name in wanted if name not in LOGGERS]
    if unknown:
        raise FinfusionError(f"trainer.loggers: unknown logger(s) {', '.join(unknown)}; known: {', '.join(LOGGERS)}")
    loggers: list[Logger] = []
    if "csv" in wanted:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv"))
    if "tensorboard" in wanted:
        if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
            raise FinfusionError(
                "trainer.loggers asks for tensorboard, which is not installed (pip install tensorboard)"
            )
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard"))
    return loggers


def _checkpoints(options: Mapping[str, Any], run_dir: Path) -> list[Callback]:
    """The best-k checkpoints on the monitored metric, and the one resume point `last.ckpt` (`LastCheckpoint`: every
    epoch end, and every `every_n_train_steps` optimiser steps when that is set, which a validation inside an epoch,
    `val_check_interval`, would make inexact). Best-k names are never versioned: a resumed run rewrites the best-k
    checkpoints its killed run wrote after `last.ckpt` under the same names, so none is left behind."""
    ckpt = options["checkpoint"]
    dirpath = run_dir / CHECKPOINT_DIR
    monitor = str(ckpt["monitor"])
    every = ckpt.get("every_n_train_steps")
    if every and options["val_check_interval"] is not None:
        raise FinfusionError(
            "trainer: checkpoint.every_n_train_steps and val_check_interval cannot be combined (a run resumed from "
            "a step checkpoint would skip the validation that followed it); keep one of them"
        )
    best = ModelCheckpoint(
        dirpath=dirpath,
        filename=f"best-{{epoch}}-{{step}}-{{{monitor}:.4f}}",
        monitor=monitor,
        mode=ckpt["mode"],
        save_top_k=ckpt["save_top_k"],
        auto_insert_metric_name=True,
        enable_version_counter=False,
    )
    return [best, LastCheckpoint(dirpath / LAST_CHECKPOINT, int(every) if every else None)]


def _callbacks(options: Mapping[str, Any], run_dir: Path) -> list[Callback]:
    callbacks: list[Callback] = _checkpoints(options, run_dir)
    stop = options["early_stopping"]
    if stop["enabled"]:
        callbacks.append(
            EarlyStopping(
                monitor=stop["monitor"], mode=stop["mode"], patience=stop["patience"], min_delta=stop["min_delta"]
            )
        )
    swa = options["swa"]
    if swa["enabled"]:
        callbacks.append(StochasticWeightAveraging(swa_lrs=swa["swa_lrs"], swa_epoch_start=swa["swa_epoch_start"]))
    if Augmentation.wanted(options["augmentation"]):
        callbacks.append(Augmentation(options["augmentation"], int(options["seed"])))
    return callbacks


class PlainProgress(Callback):
    """One plain line per training epoch on stderr (epoch, steps, logged metrics): the progress display of logs."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if value.numel() == 1 and not name.endswith(("_step", "_epoch"))  # Lightning's per-step/epoch copies
        }
        shown = ", ".join(f"{name} {value:.5g}" for name, value in sorted(metrics.items()))
        print(f"epoch {trainer.current_epoch + 1}: step {trainer.global_step}; {shown}", file=sys.stderr, flush=True)


class _DropNotices(logging.Filter):
    """Drops Lightning's advertising tip (litlogger) and its hardware banner from its info log."""

    NOTICES = ("litlogger", "GPU available:", "TPU available:", "HPU available:", "to estimate number of stepping")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


_TIP_FILTER = _DropNotices()


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """Silences third-party notices that are not about the user's run: Lightning's litlogger tip, torch's LeafSpec
    deprecation raised inside Lightning, and Lightning's per-run hardware banner."""
    loggers = [logging.getLogger("lightning.pytorch.utilities.rank_zero")]
    for logger in loggers:
        logger.addFilter(_TIP_FILTER)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(_TIP_FILTER)


def _progress(options: Mapping[str, Any]) -> tuple[bool, list[Callback]]:
    """(enable_progress_bar, callbacks): a rich bar on a terminal, plain epoch lines otherwise, or nothing."""
    if not options["enable_progress_bar"]:
        return False, []
    if sys.stderr.isatty():
        return True, [RichProgressBar()]
    return False, [PlainProgress()]


def _trainer(**kwargs: Any) -> L.Trainer:
    """The only construction of a Lightning Trainer in finfusion (model summary off: our commands say what ran)."""
    with quiet_third_party():
        return L.Trainer(enable_model_summary=False, **kwargs)


def build_trainer(
    cfg: Mapping[str, Any] | DictConfig, run_dir: str | Path, callbacks: Sequence[Callback] = ()
) -> L.Trainer:
    """A fitting Trainer from the trainer part `cfg` writing into `run_dir`; seeds everything first (`seed`)."""
    options = trainer_options(cfg)
    run = Path(run_dir)
    L.seed_everything(int(options["seed"]), workers=True, verbose=False)
    kwargs = {key: options[key] for key in _PASSTHROUGH if options[key] is not None}
    progress_bar, progress = _progress(options)
    return _trainer(
        default_root_dir=str(run),
        plugins=[AtomicCheckpointIO()],
        precision=resolve_precision(options["precision"]),
        callbacks=[*_callbacks(options, run), *progress, *callbacks],
        logger=_loggers(options, run) or False,
        enable_progress_bar=progress_bar,
        **kwargs,
    )


def scoring_trainer(cfg: Mapping[str, Any] | DictConfig) -> L.Trainer:
    """A Trainer that validates or predicts without logging, checkpointing or a progress bar."""
    options = trainer_options(cfg)
    return _trainer(
        accelerator=options["accelerator"],
        devices=options["devices"],
        precision=resolve_precision(options["precision"]),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )


def resume_checkpoint(run_dir: str | Path, resume: str | Path | None) -> Path | None:
    """The checkpoint to resume from: `RUN/checkpoints/last.ckpt` when `resume` is "auto" and it exists, a given
    path, or None ("never" / None)."""
    if resume is None or str(resume) == "never":
        return None
    if str(resume) == "auto":
        last = Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FinfusionError(f"no checkpoint to resume from at {path}")
    return path


def _checked_resume(task: L.LightningModule, run_dir: Path, resume: str | Path | None) -> Path | None:
    """`resume_checkpoint`, read weights-only first: a file that is not a training checkpoint of `task`'s model is a
    `FinfusionError` naming it, before Lightning reads it."""
    path = resume_checkpoint(run_dir, resume)
    if path is not None:
        check_weights(path, read_checkpoint(path, RESUME_KEYS)["state_dict"], task.state_dict())
    return path


def fit(
    task: L.LightningModule,
    loaders: tuple[DataLoader, DataLoader | None],
    run_dir: str | Path,
    cfg: DictConfig,
    resume: str | Path | None = "auto",
    callbacks: Sequence[Callback] = (),
) -> L.Trainer:
    """Fit `task` on (train, val) loaders; `cfg` is the whole experiment config (its `trainer` part builds the
    Trainer) and is saved resolved to `RUN/config.yaml`. Resumes from `RUN/checkpoints/last.ckpt` when present
    (resume="auto"), exactly: the training batches come through `ResumableBatches` (training/resume.py)."""
    run = Path(run_dir)
    ckpt_path = _checked_resume(task, run, resume)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / CONFIG_FILE)
    trainer_cfg = cfg.get("trainer", {})
    train_loader, val_loader = loaders
    options = trainer_options(trainer_cfg)
    if val_loader is not None:
        val_loader = spread_over_span(val_loader, options["limit_val_batches"])
    batches = ResumableBatches(train_loader, int(options["seed"]))
    trainer = build_trainer(trainer_cfg, run, [ExactResume(batches), *callbacks])
    with quiet_third_party(), warnings.catch_warnings():
        if ckpt_path is not None:  # the checkpoints a resumed run finds are its own
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(task, train_dataloaders=batches, val_dataloaders=val_loader, ckpt_path=ckpt_path, weights_only=True)
    return trainer


def spread_over_span(loader: DataLoader, limit: int | float | None) -> DataLoader:
    """With `limit_val_batches` N (an integer) and more than N batches: a loader of N batches of windows spread evenly
    over the whole validation span, first and last included, in order. Lightning would take the first N batches,
    the span's earliest days only, and choose the checkpoint on them. Other loaders are returned as they are."""
    if not isinstance(limit, int) or isinstance(limit, bool) or loader.batch_size is None or len(loader) <= limit:
        return loader
    count = len(loader.dataset)  # type: ignore[arg-type]
    positions = np.unique(np.linspace(0, count - 1, limit * loader.batch_size).round().astype(int))
    return DataLoader(
        Subset(loader.dataset, positions.tolist()),
        batch_size=loader.batch_size,
        shuffle=False,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
    )


@dataclass(frozen=True)
class FitResult:
    """Where the best checkpoint of a fit is and its monitored score (None without checkpoints)."""

    best_checkpoint: Path | None
    best_score: float | None


def best_state_dict(checkpoint: str | Path) -> dict[str, Tensor]:
    """The model's weights in a Lightning checkpoint (keys without the task's `model.` prefix); read weights-only, a
    file that is not a checkpoint is a `FinfusionError` naming it."""
    state = read_checkpoint(checkpoint)["state_dict"]
    return {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}


def fit_task(
    task: L.LightningModule,
    loaders: tuple[DataLoader, DataLoader | None],
    run_dir: str | Path,
    cfg: DictConfig,
    resume: str | Path | None = "auto",
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """`fit`, then load the best checkpoint's weights into `task.model` and put it in eval mode."""
    trainer = fit(task, loaders, run_dir, cfg, resume=resume, callbacks=callbacks)
    callback = trainer.checkpoint_callback
    best = Path(callback.best_model_path) if callback is not None and callback.best_model_path else None
    if best is not None and best.is_file():
        task.model.load_state_dict(best_state_dict(best))
    score = callback.best_model_score if callback is not None else None
    task.model.eval()
    return FitResult(best, None if score is None else float(score))


def validate_task(task: L.LightningModule, loader: DataLoader, cfg: Mapping[str, Any] | DictConfig) -> dict[str, float]:
    """The task's validation metrics on `loader` (no training); `cfg` is the trainer part."""
    with quiet_third_party():
        (metrics,) = scoring_trainer(cfg).validate(task, loader, verbose=False)
    return {name: float(value) for name, value in metrics.items()}


def predict_task(
    task: L.LightningModule, loader: DataLoader, cfg: Mapping[str, Any] | DictConfig
) -> list[dict[str, Tensor]]:
    """The task's `predict_step` outputs on `loader`, one dict per batch, in order; `cfg` is the trainer part."""
    with quiet_third_party():
        outputs = scoring_trainer(cfg).predict(task, loader)
    return list(outputs or [])
