"""The callback that sends a training run's epoch metrics to its tracked MLflow run (training/tracking.py)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from finfusion.training.tracking import TrackedRun


class EpochMetrics(Callback):
    """Logs the trainer's epoch metrics (train and validation) to the open tracked run, step = epoch."""

    def __init__(self, run: TrackedRun) -> None:
        self.run = run

    def _log(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if value.numel() == 1 and not name.endswith("_step")
        }
        self.run.log_metrics(metrics, step=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer)
