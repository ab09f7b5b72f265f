"""PatchTST as a direction classifier (seed 001, the continuous baseline of the token track): the PatchTST encoder
over the price window of a token window's bars, a flatten head over every channel's patches.

    past [B, L, C] -> RevIN -> patches [B, C, P, D] -> flatten [B, C * P * D] -> dropout -> Linear -> logits [B, K]

Batch: `past` [B, L, C] float32, `past_mask` [B, L] bool (samples/token_fusion.py). Outputs: `logits` [B, K].
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.models.patchtst import PatchTSTTower, dropout_or_identity
from finfusion.samples.contract import PAST, PAST_MASK


class PatchTSTClassifier(nn.Module, Capabilities):
    """See the module docstring. `n_channels` C and `context_length` L come from the data."""

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        n_classes: int = 2,
        patch_len: int = 8,
        stride: int = 8,
        d_model: int = 32,
        n_heads: int = 2,
        n_layers: int = 1,
        d_ff: int = 64,
        dropout: float = 0.1,
        head_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.tower = PatchTSTTower(n_channels, context_length, patch_len, stride, d_model, n_heads, n_layers, d_ff,
                                   dropout)  # fmt: skip
        flat = n_channels * self.tower.encoder.n_patches * d_model
        self.head = nn.Sequential(dropout_or_identity(head_dropout), nn.Linear(flat, n_classes))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        patches, _ = self.tower(batch[PAST], batch.get(PAST_MASK))
        return {"logits": self.head(patches.flatten(1))}
