"""Lightning tasks: each wraps any `nn.Module` that follows the sample contract and returns the outputs the task needs.

- `ForecastTask`: `point` [B, H, T] and/or `quantiles` [B, H, T, Q] against `future` [B, H, T]; validation logs
  `val_loss`, the registry's `VAL_METRICS` (val_mae, val_rmse, val_directional_accuracy, val_mcc) of the next-bar
  return forecast and `val_sharpe`.
- `MovementTask`: `logits` [B, K] against `label` [B] (-1 ignored); validation logs `val_loss`, `val_accuracy`,
  `val_mcc`. Optional adversarial training (Adv-ALSTM, Feng et al. IJCAI 2019) for models that return `latent` and
  implement `classify(latent)`.

An optional model output `aux_loss` [] is added to the task loss. Gradient clipping is set on the Trainer.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finfusion.config import plain
from finfusion.evaluation.metric_registry import metric_table
from finfusion.evaluation.metrics import mcc
from finfusion.samples.contract import (
    FUTURE,
    FUTURE_MASK,
    IGNORE_LABEL,
    LABEL,
    ORIGIN_US,
    SCALE_LOC,
    SCALE_SCALE,
    SYMBOL_INDEX,
)
from finfusion.training.losses import build_loss
from finfusion.training.schedule import configure_optimizer

Batch = Mapping[str, Tensor]
#: Registered metrics (evaluation/metric_registry.py) the forecast task logs on validation.
VAL_METRICS = ("mae", "rmse", "directional_accuracy", "mcc")


class _Task(L.LightningModule):
    """Shared plumbing: forward, loss (+ `aux_loss`), AdamW + warm-up/cosine, predict."""

    def __init__(
        self,
        model: nn.Module,
        loss: str | None,
        loss_kwargs: Mapping[str, Any] | None,
        lr: float,
        weight_decay: float,
        warmup_fraction: float,
        total_steps: int | None,
        min_lr_ratio: float,
        extra_groups: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.loss_fn: nn.Module | None = (
            None if loss is None else build_loss(loss, **self._loss_kwargs(model, loss, dict(loss_kwargs or {})))
        )

    @staticmethod
    def _loss_kwargs(model: nn.Module, loss: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.model(batch)

    def _step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.loss_fn is None:
            raise TypeError(f"{type(self).__name__} has no loss by name; it overrides the steps that need one")
        outputs = self.model(batch)
        loss = self.loss_fn(outputs, batch)
        if "aux_loss" in outputs:
            loss = loss + outputs["aux_loss"]
        return loss, outputs

    def _training_loss(self, batch: Batch) -> Tensor:
        return self._step(batch)[0]

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self._training_loss(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=_batch_size(batch))
        return loss

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """The model's outputs, detached, plus `origin_us` and `symbol_index` when the batch carries them."""
        outputs = {key: value.detach() for key, value in self.model(batch).items()}
        outputs.update({key: batch[key] for key in (ORIGIN_US, SYMBOL_INDEX) if key in batch})
        return outputs

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = hp.total_steps or int(self.trainer.estimated_stepping_batches)
        return configure_optimizer(
            self.model,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            warmup_fraction=hp.warmup_fraction,
            total_steps=max(1, total),
            extra_groups=hp.extra_groups,
            min_ratio=hp.min_lr_ratio,
        )


class ModelLossTask(_Task):
    """A task whose loss the model computes itself: `outputs[loss_key]` [] (e.g. a masked-LM or CRF likelihood)."""

    loss_key: str = "loss"

    def __init__(
        self,
        model: nn.Module,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.05,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        extra_groups: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(model, None, None, lr, weight_decay, warmup_fraction, total_steps, min_lr_ratio, extra_groups)

    def _step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        outputs = self.model(batch)
        return outputs[self.loss_key], outputs


def _batch_size(batch: Batch) -> int:
    return int(next(iter(batch.values())).shape[0])


def point_from_outputs(outputs: Mapping[str, Tensor], levels: Sequence[float] | None) -> Tensor:
    """`point` [B, H, T], or the quantile nearest the median of `quantiles` [B, H, T, Q] at `levels` [Q]."""
    if "point" in outputs:
        return outputs["point"]
    if levels is None:
        raise ValueError("the model returns no `point` and declares no `quantile_levels`")
    median = min(range(len(levels)), key=lambda i: abs(float(levels[i]) - 0.5))
    return outputs["quantiles"][..., median]


def sharpe_ratio(pnl: Tensor, periods_per_year: float) -> float:
    """Annualised Sharpe ratio of per-period returns `pnl` [N] (0 when there are fewer than two or no spread)."""
    if pnl.numel() < 2:
        return 0.0
    std = float(pnl.std())
    return 0.0 if std == 0.0 else float(pnl.mean()) / std * math.sqrt(periods_per_year)


class ForecastTask(_Task):
    """Trajectory / quantile forecasting of `future` [B, H, T].

    Validation Sharpe: a position sign(forecast) at step 1 of `return_channel`, times the realised value there
    (both denormalised with `scale_loc` / `scale_scale` when the batch has them), annualised by `periods_per_year`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str = "mse",
        loss_kwargs: Mapping[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.05,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        extra_groups: Sequence[Mapping[str, Any]] | None = None,
        return_channel: int = 0,
        periods_per_year: float = 252.0,
    ) -> None:
        super().__init__(
            model, loss, loss_kwargs, lr, weight_decay, warmup_fraction, total_steps, min_lr_ratio, extra_groups
        )
        levels = getattr(model, "quantile_levels", None)
        self.quantile_levels = None if levels is None else [float(level) for level in levels]
        self._val: dict[str, list[Tensor]] = {}

    @staticmethod
    def _loss_kwargs(model: nn.Module, loss: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        if loss in ("quantile", "mse_quantile") and "levels" not in kwargs:
            kwargs["levels"] = [float(level) for level in model.quantile_levels]
        return kwargs

    def on_validation_epoch_start(self) -> None:
        self._val = {"forecast": [], "realised": []}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, outputs = self._step(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=_batch_size(batch))
        point = point_from_outputs(outputs, self.quantile_levels).detach().float()
        future = batch[FUTURE].float()
        mask = batch.get(FUTURE_MASK)
        step_mask = torch.ones_like(future[..., 0], dtype=torch.bool) if mask is None else mask.bool()
        channel = self.hparams.return_channel
        forecast, realised = point[:, 0, channel], future[:, 0, channel]
        if SCALE_LOC in batch and SCALE_SCALE in batch:
            loc, scale = batch[SCALE_LOC][:, 0, channel].float(), batch[SCALE_SCALE][:, 0, channel].float()
            forecast, realised = forecast * scale + loc, realised * scale + loc
        keep = step_mask[:, 0]
        self._val["forecast"].append(forecast[keep].cpu())
        self._val["realised"].append(realised[keep].cpu())

    def on_validation_epoch_end(self) -> None:
        """The registry's validation metrics (`VAL_METRICS`) of the next-bar forecast of the return channel, in its
        own units, and the sign strategy's Sharpe ratio, logged as val_<name>."""
        if not self._val.get("forecast"):
            return
        forecast, realised = torch.cat(self._val["forecast"]), torch.cat(self._val["realised"])
        if forecast.numel() == 0:
            return
        table = metric_table(realised.double().numpy(), forecast.double().numpy(), reference=0.0, names=VAL_METRICS)
        for name, value in table.items():
            self.log(f"val_{name}", torch.tensor(value))
        pnl = torch.sign(forecast) * realised
        self.log("val_sharpe", torch.tensor(sharpe_ratio(pnl, self.hparams.periods_per_year)), prog_bar=True)


class MovementTask(_Task):
    """Movement classification of `label` [B] from `logits` [B, K]; labels equal to -1 are ignored.

    With `adversarial_epsilon` > 0 the training loss adds `adversarial_beta` times the loss at the latent moved by
    `adversarial_epsilon` along its own (per-sample L2-normalised) loss gradient, the worst small perturbation to
    first order (Adv-ALSTM); the model must return `latent` [B, E] and implement `classify(latent)` -> `logits`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str = "cross_entropy",
        loss_kwargs: Mapping[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.05,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        extra_groups: Sequence[Mapping[str, Any]] | None = None,
        adversarial_epsilon: float = 0.0,
        adversarial_beta: float = 1.0,
    ) -> None:
        super().__init__(
            model, loss, loss_kwargs, lr, weight_decay, warmup_fraction, total_steps, min_lr_ratio, extra_groups
        )
        if adversarial_epsilon < 0 or adversarial_beta < 0:
            raise ValueError(f"adversarial_epsilon {adversarial_epsilon} and _beta {adversarial_beta} must be >= 0")
        if adversarial_epsilon > 0 and not ("latent" in getattr(model, "outputs", ()) and hasattr(model, "classify")):
            raise ValueError(
                f"adversarial training needs a model that returns `latent` and has `classify`; "
                f"{type(model).__name__} does not"
            )
        self._val: dict[str, list[Tensor]] = {}

    def _training_loss(self, batch: Batch) -> Tensor:
        loss, outputs = self._step(batch)
        epsilon = self.hparams.adversarial_epsilon
        if epsilon == 0:
            return loss
        latent = outputs["latent"]
        (grad,) = torch.autograd.grad(loss, latent, retain_graph=True)
        shifted = latent + epsilon * F.normalize(grad.detach(), dim=-1)
        adversarial = self.loss_fn(dict(outputs, logits=self.model.classify(shifted)), batch)
        return loss + self.hparams.adversarial_beta * adversarial

    def on_validation_epoch_start(self) -> None:
        self._val = {"pred": [], "target": []}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, outputs = self._step(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=_batch_size(batch))
        logits, labels = outputs["logits"].detach(), batch[LABEL]
        keep = labels != IGNORE_LABEL
        self._val["pred"].append(logits.argmax(dim=-1)[keep].cpu())
        self._val["target"].append(labels[keep].cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("pred"):
            return
        pred, target = torch.cat(self._val["pred"]), torch.cat(self._val["target"])
        accuracy = (pred == target).float().mean() if target.numel() else torch.tensor(0.0)
        self.log("val_accuracy", accuracy, prog_bar=True)
        self.log("val_mcc", torch.tensor(mcc(target.numpy(), pred.numpy())))


#: Task names -> classes; tasks defined in other modules (which import this one) are named by "module:Class".
TASKS: dict[str, type[_Task] | str] = {
    "forecast": ForecastTask,
    "movement": MovementTask,
    "generative": "finfusion.training.generative_task:GenerativeForecastTask",
    # the universal family's pre-training: the same NLL training of a generative model on its shards
    "pretrain": "finfusion.training.generative_task:GenerativeForecastTask",
    "portfolio": "finfusion.training.portfolio_task:PortfolioTask",
    "relevance": "finfusion.training.relevance_task:RelevanceTask",
    "masked_lm": "finfusion.training.masked_lm_task:MaskedLMTask",
    # the token-classification family's fine-tuning: the movement task's classification of `logits` [B, K]
    "token_classification": MovementTask,
    # the token-classification family's per-bar pattern tagging with a CRF
    "token_tagging": "finfusion.training.token_tagging_task:TokenTaggingTask",
    # the order-book family's mid-price movement (down, stationary, up)
    "lob_movement": MovementTask,
}


def task_class(name: str) -> type[_Task]:
    """The task class registered as `name`; raises KeyError listing the known names."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    entry = TASKS[name]
    if isinstance(entry, str):
        module, cls = entry.split(":")
        return getattr(importlib.import_module(module), cls)
    return entry


def build_task(task_cfg: Mapping[str, Any], optim_cfg: Mapping[str, Any], model: nn.Module) -> _Task:
    """The task named `task_cfg["name"]` around `model`; other keys of `task_cfg` and `optim_cfg` are its arguments."""
    task, optim = plain(task_cfg), plain(optim_cfg)
    name = task.pop("name")
    return task_class(str(name))(model, **task, **optim)
