"""Lightning task of per-bar tagging with a CRF (models/token_bert_tagger.py): the model's `crf_loss` (negative
log-likelihood of the known tags) through the shared plumbing of training/tasks.py.

Validation logs `val_loss` and `val_tag_accuracy`, `val_tag_f1` (macro F1): the Viterbi paths against the known
tags of the validation windows.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score

from finfusion.samples.contract import TAGS
from finfusion.training.tasks import Batch, ModelLossTask, _batch_size


class TokenTaggingTask(ModelLossTask):
    """See the module docstring."""

    loss_key = "crf_loss"
    _val: dict[str, list[np.ndarray]]

    def on_validation_epoch_start(self) -> None:
        self._val = {"predicted": [], "truth": []}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, _ = self._step(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=_batch_size(batch))
        paths = self.model.decode(batch)
        tags = batch[TAGS].cpu().numpy()
        for row, path in enumerate(paths):
            known = tags[row, : len(path)] >= 0
            self._val["predicted"].append(np.asarray(path)[known])
            self._val["truth"].append(tags[row, : len(path)][known])

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("truth"):
            return
        truth, predicted = np.concatenate(self._val["truth"]), np.concatenate(self._val["predicted"])
        if truth.size == 0:
            return
        self.log("val_tag_accuracy", torch.tensor(float(np.mean(truth == predicted))), prog_bar=True)
        self.log("val_tag_f1", torch.tensor(float(f1_score(truth, predicted, average="macro", zero_division=0))))
