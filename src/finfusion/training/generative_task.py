"""Lightning task for generative trajectory models: any model with `training_losses(batch)` and `sample(batch, ...)`.

Training minimises `training_losses(batch)["loss"]` and logs every part as `train_<part>`. Two-stage schedule
(seed 000): stage 1 trains everything trainable (new modules + LoRA adapters) at `lr`; from epoch
`unfreeze_text_epoch` on (stage 2) the model's frozen text backbone (`text_base_parameters()`) trains too, at
`text_lr`. The backbone's weights sit in their own AdamW param group from the start (they get no gradient, so no
update, while frozen), so the optimizer state and the warm-up/cosine schedule are the same in both stages and a
checkpoint resumes in either.

Validation, with a fixed generator per batch so that epochs compare: `val_loss` (and `val_<part>`) from the same
losses, then `val_num_samples` paths per sample scored against `future` on the steps where `future_mask` holds
(a diffusion model's `val_steps` steps of `val_sampler` at `val_guidance_scale`; each one left out takes the model's
own default, and a model whose `sampler_options` do not name one refuses it): `val_crps` (mean CRPS of the sampled
distribution per step and target), `val_coverage80` (share inside the central 80% sample interval) and
`val_directional_accuracy` (sign of the median sampled cumulative return of target `return_channel` over the horizon
against the realised one, both denormalised with `scale_loc` / `scale_scale` when the batch has them). Prediction
returns `samples` and `point` (see `_Task`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from finfusion.evaluation.metrics import crps_from_samples, directional_accuracy, sample_interval
from finfusion.samples.contract import FUTURE, FUTURE_MASK, SCALE_LOC, SCALE_SCALE
from finfusion.training.schedule import param_groups, warmup_cosine_schedule
from finfusion.training.tasks import Batch, _batch_size, _Task

COVERAGE_ALPHA = 0.2


class GenerativeForecastTask(_Task):
    """Trains `model.training_losses`, validates sampled paths; two-stage text fine-tuning via param groups."""

    def __init__(
        self,
        model: nn.Module,
        lr: float = 2e-4,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.05,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        extra_groups: Sequence[Mapping[str, Any]] | None = None,
        text_lr: float = 5e-5,
        unfreeze_text_epoch: int | None = None,
        val_num_samples: int = 16,
        val_steps: int | None = None,
        val_sampler: str | None = None,
        val_guidance_scale: float | None = None,
        val_seed: int = 0,
        return_channel: int = 0,
    ) -> None:
        super().__init__(model, None, None, lr, weight_decay, warmup_fraction, total_steps, min_lr_ratio, extra_groups)
        self._val: dict[str, list[Any]] = {}
        given = {"steps": val_steps, "sampler": val_sampler, "guidance_scale": val_guidance_scale}
        self._sampler = {key: value for key, value in given.items() if value is not None}
        takes = getattr(model, "sampler_options", frozenset())
        refused = sorted(set(self._sampler) - takes)
        if refused:
            raise ValueError(f"{type(model).__name__} takes no sampler option val_{refused[0]}")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        parts = self.model.training_losses(batch)
        size = _batch_size(batch)
        self.log("train_loss", parts["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name, value in parts.items():
            if name != "loss":
                self.log(f"train_{name}", value, on_step=True, on_epoch=True, batch_size=size)
        return parts["loss"]

    def on_train_epoch_start(self) -> None:
        epoch = self.hparams.unfreeze_text_epoch
        if epoch is not None:
            self.model.set_text_base_trainable(self.current_epoch >= epoch)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = max(1, hp.total_steps or int(self.trainer.estimated_stepping_batches))
        groups = param_groups(self.model, hp.lr, hp.weight_decay, hp.extra_groups)
        if hp.unfreeze_text_epoch is not None:
            seen = {id(param) for group in groups for param in group["params"]}
            base = [param for param in self.model.text_base_parameters() if id(param) not in seen]
            for decay, params in (
                (hp.weight_decay, [p for p in base if p.ndim >= 2]),
                (0.0, [p for p in base if p.ndim < 2]),
            ):
                if params:
                    groups.append({"params": params, "lr": hp.text_lr, "weight_decay": decay})
        optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        scheduler = warmup_cosine_schedule(optimizer, total, hp.warmup_fraction, hp.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def on_validation_epoch_start(self) -> None:
        self._val = {"crps": [], "covered": [], "count": [], "true_move": [], "pred_move": []}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        hp = self.hparams
        generator = torch.Generator(device=self.device).manual_seed(hp.val_seed + batch_idx)
        parts = self.model.training_losses(batch, generator=generator)
        size = _batch_size(batch)
        self.log("val_loss", parts["loss"], on_epoch=True, prog_bar=True, batch_size=size)
        for name, value in parts.items():
            if name != "loss":
                self.log(f"val_{name}", value, on_epoch=True, batch_size=size)
        samples = self.model.sample(batch, hp.val_num_samples, generator=generator, **self._sampler)  # [B, S, H, T]
        future = batch[FUTURE].float()
        mask = batch.get(FUTURE_MASK)
        step_mask = torch.ones(future.shape[:2], dtype=torch.bool, device=future.device) if mask is None else mask
        paths = samples.float().permute(0, 2, 3, 1).cpu().numpy()  # [B, H, T, S]
        truth = future.cpu().numpy()
        keep = np.broadcast_to(step_mask.cpu().numpy()[..., None], truth.shape)
        low, high = sample_interval(paths, COVERAGE_ALPHA)
        self._val["crps"].append(float(crps_from_samples(truth, paths)[keep].sum()))
        self._val["covered"].append(int(((truth >= low) & (truth <= high))[keep].sum()))
        self._val["count"].append(int(keep.sum()))
        channel = hp.return_channel
        moves, realised = samples[..., channel].float(), future[..., channel]
        if SCALE_LOC in batch and SCALE_SCALE in batch:
            loc, scale = batch[SCALE_LOC][:, 0, channel].float(), batch[SCALE_SCALE][:, 0, channel].float()
            moves, realised = (
                moves * scale[:, None, None] + loc[:, None, None],
                realised * scale[:, None] + loc[:, None],
            )
        weight = step_mask.float()
        self._val["pred_move"].append((moves * weight[:, None]).sum(dim=-1).median(dim=1).values.cpu())
        self._val["true_move"].append((realised * weight).sum(dim=-1).cpu())

    def on_validation_epoch_end(self) -> None:
        count = sum(self._val.get("count", []))
        if not count:
            return
        self.log("val_crps", sum(self._val["crps"]) / count, prog_bar=True)
        self.log("val_coverage80", sum(self._val["covered"]) / count)
        true_move, pred_move = torch.cat(self._val["true_move"]), torch.cat(self._val["pred_move"])
        self.log("val_directional_accuracy", directional_accuracy(true_move.numpy(), pred_move.numpy()))
