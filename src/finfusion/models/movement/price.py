"""Price-only movement model for lag-step samples (the ACL18 ablation without text).

Each step's price channels `past` [B, L, C] are projected to d and tagged with a learned step-position embedding;
`TemporalHead` (GRU + temporal attention) turns the steps, under `past_mask` [B, L], into `logits` [B, 2].
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.models.movement.parts import LatentClassifier, TemporalHead
from finfusion.samples.contract import PAST, PAST_MASK


class StepPriceEncoder(nn.Module):
    """Price channels [B, L, C] -> step vectors [B, L, d] (linear map + step-position embedding + LayerNorm)."""

    def __init__(self, n_channels: int, lag_days: int, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n_channels, d_model)
        self.position = nn.Parameter(torch.zeros(lag_days, d_model))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, past: Tensor) -> Tensor:
        return self.norm(self.proj(past) + self.position)


class MovementPrice(LatentClassifier, nn.Module, Capabilities):
    """Up/down logits [B, 2] from the price channels of the lag steps."""

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits", "latent"})

    def __init__(self, n_channels: int, lag_days: int = 5, d_model: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = StepPriceEncoder(n_channels, lag_days, d_model)
        self.head = TemporalHead(d_model, dropout)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.head(self.encoder(batch[PAST]), batch[PAST_MASK])

    def lag_attention(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """`steps` [B, L]: the temporal attention over the lag days."""
        return {"steps": self.head.attention(self.encoder(batch[PAST]), batch[PAST_MASK])}
