"""Lightning task of masked-LM pre-training on tokens: the model's own `mlm_loss` (cross-entropy over the masked
positions) through the shared plumbing of training/tasks.py.

Validation logs `val_loss` (the masked positions' mean cross-entropy, nats), `val_perplexity` (its exponential)
and `val_masked_accuracy` (the argmax id equals the original at the masked positions).
"""

from __future__ import annotations

import math

import torch

from finfusion.samples.contract import LABELS
from finfusion.samples.masked_lm import IGNORE_INDEX
from finfusion.training.tasks import Batch, ModelLossTask


class MaskedLMTask(ModelLossTask):
    """See the module docstring."""

    loss_key = "mlm_loss"
    _val: dict[str, float]

    def on_validation_epoch_start(self) -> None:
        self._val = {"nats": 0.0, "hits": 0.0, "count": 0.0}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, outputs = self._step(batch)
        chosen = batch[LABELS] != IGNORE_INDEX
        count = float(chosen.sum())
        if count == 0:
            return
        predicted = outputs["logits"].detach().argmax(dim=-1)
        self._val["nats"] += float(loss.detach()) * count
        self._val["hits"] += float((predicted[chosen] == batch[LABELS][chosen]).sum())
        self._val["count"] += count

    def on_validation_epoch_end(self) -> None:
        count = self._val.get("count", 0.0)
        if count == 0:
            return
        nats = self._val["nats"] / count
        self.log("val_loss", torch.tensor(nats), prog_bar=True)
        self.log("val_perplexity", torch.tensor(math.exp(min(nats, 50.0))))
        self.log("val_masked_accuracy", torch.tensor(self._val["hits"] / count), prog_bar=True)
