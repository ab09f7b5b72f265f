"""Lightning task of the dual-tower relevance model: the multi-task loss (training/relevance_loss.py) through the
shared plumbing of training/tasks.py (AdamW with per-tower learning rates by `optim.extra_groups`, warm-up + cosine,
gradient clipping, early stopping and the best checkpoints on the Trainer).

Validation logs `val_loss` and, per horizon of h days, `val_mse_{h}d` (score against the [-1, 1] label),
`val_corr_{h}d` (Pearson correlation of score and label) and `val_accuracy_{h}d` (the positive probability above
1/2 against the direction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from finfusion.samples.contract import DIRECTION, LABEL_MASK, RELEVANCE
from finfusion.training.relevance_loss import RelevanceLoss
from finfusion.training.tasks import Batch, _batch_size, _Task


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of `a` [N] and `b` [N] (0 with fewer than two values or no spread)."""
    if a.numel() < 2:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return 0.0 if denominator == 0.0 else float((a * b).sum()) / denominator


class RelevanceTask(_Task):
    """Relevance scores and directions per horizon (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        regression_weights: Sequence[float] = (1.0, 1.0),
        classification_weights: Sequence[float] = (0.5, 0.5),
        regularization_weight: float = 0.01,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        warmup_fraction: float = 0.05,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        extra_groups: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(model, None, None, lr, weight_decay, warmup_fraction, total_steps, min_lr_ratio, extra_groups)
        self.loss_fn: RelevanceLoss = RelevanceLoss(regression_weights, classification_weights, regularization_weight)
        self.horizons = [int(h) for h in getattr(model, "horizons", range(len(regression_weights)))]
        self._val: dict[str, list[Tensor]] = {}

    def _step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        outputs = self.model(batch)
        return self.loss_fn(outputs, batch), outputs

    def on_validation_epoch_start(self) -> None:
        self._val = {"score": [], "prob": [], "relevance": [], "direction": [], "mask": []}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, outputs = self._step(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=_batch_size(batch))
        self._val["score"].append(outputs["score"].detach().float().cpu())
        self._val["prob"].append(outputs["direction_logits"].detach().float().softmax(dim=-1)[..., 1].cpu())
        for key, name in ((RELEVANCE, "relevance"), (DIRECTION, "direction"), (LABEL_MASK, "mask")):
            self._val[name].append(batch[key].cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("score"):
            return
        score, prob, relevance, direction, mask = (torch.cat(self._val[name]) for name in self._val)
        for k, days in enumerate(self.horizons):
            keep = mask[:, k].bool()
            if not keep.any():
                continue
            s, r = score[keep, k], relevance[keep, k].float()
            self.log(f"val_mse_{days}d", (s - r).pow(2).mean())
            self.log(f"val_corr_{days}d", torch.tensor(pearson(s, r)))
            hits = ((prob[keep, k] > 0.5).long() == direction[keep, k]).float().mean()
            self.log(f"val_accuracy_{days}d", hits, prog_bar=k == 0)
