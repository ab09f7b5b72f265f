"""Build a Lightning Trainer from the `trainer` config part, and fit with resume-after-crash.

Run folder layout:

    RUN/config.yaml            the resolved experiment config (`finfusion train --config RUN/config.yaml` repeats it)
    RUN/checkpoints/           best-k checkpoints on the monitored metric, and last.ckpt (resume point)
    RUN/csv/, RUN/tensorboard/ logs (RUN/mlruns/ too when MLflow is requested and installed)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, StochasticWeightAveraging
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from finfusion.config import save_config

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
    "loggers": ["csv", "tensorboard"],
    "mlflow": {"experiment_name": "finfusion", "tracking_uri": None},
}

_PASSTHROUGH = (
    "max_epochs",
    "max_steps",
    "accelerator",
    "devices",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
    "limit_train_batches",
    "limit_val_batches",
    "val_check_interval",
    "check_val_every_n_epoch",
    "log_every_n_steps",
    "num_sanity_val_steps",
    "enable_progress_bar",
    "deterministic",
)


def trainer_options(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The trainer part as a plain dict, with `TRAINER_DEFAULTS` filling what it leaves out."""
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    merged = OmegaConf.merge(OmegaConf.create(TRAINER_DEFAULTS), OmegaConf.create(given))
    return OmegaConf.to_container(merged, resolve=True)


def resolve_precision(requested: str | int) -> str:
    """ "bf16-mixed" only when CUDA is available (for "auto" or a bf16 request); "32-true" otherwise."""
    text = str(requested)
    if text == "auto" or text.startswith("bf16"):
        return "bf16-mixed" if torch.cuda.is_available() else "32-true"
    return text


def _loggers(options: Mapping[str, Any], run_dir: Path) -> list[Logger]:
    wanted = set(options["loggers"])
    loggers: list[Logger] = []
    if "csv" in wanted:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv"))
    if "tensorboard" in wanted:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard"))
    if "mlflow" in wanted and importlib.util.find_spec("mlflow") is not None:
        mlflow = options["mlflow"]
        uri = mlflow.get("tracking_uri") or (run_dir / "mlruns").resolve().as_uri()
        loggers.append(MLFlowLogger(experiment_name=mlflow["experiment_name"], tracking_uri=uri))
    return loggers


def _callbacks(options: Mapping[str, Any], run_dir: Path) -> list[Callback]:
    ckpt = options["checkpoint"]
    dirpath = run_dir / CHECKPOINT_DIR
    monitor = str(ckpt["monitor"])
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=dirpath,
            filename=f"best-{{epoch}}-{{step}}-{{{monitor}:.4f}}",
            monitor=monitor,
            mode=ckpt["mode"],
            save_top_k=ckpt["save_top_k"],
            save_last=True,
            auto_insert_metric_name=True,
        )
    ]
    if ckpt.get("every_n_train_steps"):
        callbacks.append(
            ModelCheckpoint(
                dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=int(ckpt["every_n_train_steps"])
            )
        )
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
    return callbacks


def build_trainer(
    cfg: Mapping[str, Any] | DictConfig, run_dir: str | Path, callbacks: Sequence[Callback] = ()
) -> L.Trainer:
    """A Trainer from the trainer part `cfg` writing into `run_dir`; seeds everything first (`seed`)."""
    options = trainer_options(cfg)
    run = Path(run_dir)
    L.seed_everything(int(options["seed"]), workers=True, verbose=False)
    kwargs = {key: options[key] for key in _PASSTHROUGH if options[key] is not None}
    return L.Trainer(
        default_root_dir=str(run),
        precision=resolve_precision(options["precision"]),
        callbacks=[*_callbacks(options, run), *callbacks],
        logger=_loggers(options, run) or False,
        **kwargs,
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
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    return path


def fit(
    task: L.LightningModule,
    data: L.LightningDataModule | tuple[DataLoader, DataLoader | None],
    run_dir: str | Path,
    cfg: DictConfig,
    resume: str | Path | None = "auto",
    callbacks: Sequence[Callback] = (),
) -> L.Trainer:
    """Fit `task` on a DataModule or (train, val) loaders; `cfg` is the whole experiment config (its `trainer` part
    builds the Trainer) and is saved resolved to `RUN/config.yaml`. Resumes from `RUN/checkpoints/last.ckpt` when
    present (resume="auto")."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / CONFIG_FILE)
    trainer = build_trainer(cfg.get("trainer", {}), run, callbacks)
    ckpt_path = resume_checkpoint(run, resume)
    if isinstance(data, L.LightningDataModule):
        trainer.fit(task, datamodule=data, ckpt_path=ckpt_path)
    else:
        train_loader, val_loader = data
        trainer.fit(task, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)
    return trainer
