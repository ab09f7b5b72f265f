"""The multi-task loss of the dual-tower relevance model (seed 004).

    L = sum_k a_k * MSE(score_k, relevance_k) + sum_k b_k * CE(direction_logits_k, direction_k)
        + g * (L_orthogonal + L_magnitude)

over the samples whose label k is known (`label_mask`), with the seed's weights a = (1, 1), b = (0.5, 0.5),
g = 0.01 for the 7- and 30-day horizons.

- L_orthogonal: the mean squared cosine similarity of the context embedding and the stock's projection into the
  same space (0 when they are orthogonal): the towers do not collapse onto one representation.
- L_magnitude: the mean of (|e| - 1)^2 over both towers' embeddings e: embeddings neither vanish nor blow up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finfusion.samples.contract import DIRECTION, LABEL_MASK, RELEVANCE


def orthogonality_loss(context: Tensor, projection: Tensor) -> Tensor:
    """Mean squared cosine similarity of `context` [B, E] and `projection` [B, E]."""
    return F.cosine_similarity(context, projection, dim=-1, eps=1e-8).pow(2).mean()


def magnitude_loss(*embeddings: Tensor) -> Tensor:
    """Mean over the embeddings [B, E] of the mean (L2 norm - 1)^2."""
    return torch.stack([(e.norm(dim=-1) - 1.0).pow(2).mean() for e in embeddings]).mean()


def _masked(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1)


class RelevanceLoss(nn.Module):
    """See the module docstring; `terms` returns every term and the total (`loss`)."""

    def __init__(
        self,
        regression_weights: Sequence[float] = (1.0, 1.0),
        classification_weights: Sequence[float] = (0.5, 0.5),
        regularization_weight: float = 0.01,
    ) -> None:
        super().__init__()
        if len(regression_weights) != len(classification_weights):
            raise ValueError("one regression and one classification weight per horizon")
        if min(*regression_weights, *classification_weights, regularization_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        self.regression_weights = [float(w) for w in regression_weights]
        self.classification_weights = [float(w) for w in classification_weights]
        self.regularization_weight = float(regularization_weight)

    def terms(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        score, logits = outputs["score"], outputs["direction_logits"]
        if score.shape[1] != len(self.regression_weights):
            raise ValueError(f"the model has {score.shape[1]} horizons, the loss {len(self.regression_weights)}")
        mask = batch[LABEL_MASK].float()
        terms: dict[str, Tensor] = {}
        total = score.new_zeros(())
        for k, (a, b) in enumerate(zip(self.regression_weights, self.classification_weights, strict=True)):
            regression = _masked((score[:, k] - batch[RELEVANCE][:, k]).pow(2), mask[:, k])
            labels = batch[DIRECTION][:, k]
            classification = _masked(F.cross_entropy(logits[:, k], labels, reduction="none"), mask[:, k])
            terms[f"regression_{k}"], terms[f"classification_{k}"] = regression, classification
            total = total + a * regression + b * classification
        terms["orthogonal"] = orthogonality_loss(outputs["context_embedding"], outputs["stock_projection"])
        terms["magnitude"] = magnitude_loss(outputs["context_embedding"], outputs["stock_embedding"])
        terms["loss"] = total + self.regularization_weight * (terms["orthogonal"] + terms["magnitude"])
        return terms

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        return self.terms(outputs, batch)["loss"]
