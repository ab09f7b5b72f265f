"""Text-only movement model for lag-step samples (the ACL18 ablation without prices).

The tweets of each step, `text_emb` [B, L, N, D] (frozen sentence embeddings) with `text_age` [B, L, N] (days before
the decision), go through `TweetEncoder` [B, L, N, d] and are attention-pooled per step under `text_mask` [B, L, N]
(`StepPooling`, [B, L, d]); `TemporalHead` reads the steps under `past_mask` [B, L] (which steps exist, no prices)
and returns `logits` [B, 2].
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.models.movement.parts import LatentClassifier, StepPooling, TemporalHead, TweetEncoder
from finfusion.samples.contract import PAST_MASK, TEXT_AGE, TEXT_EMB, TEXT_MASK


class MovementText(LatentClassifier, nn.Module, Capabilities):
    """Up/down logits [B, 2] from the tweets of the lag steps."""

    inputs: ClassVar[frozenset[str]] = frozenset({PAST_MASK, TEXT_EMB, TEXT_MASK, TEXT_AGE})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits", "latent"})

    def __init__(self, text_dim: int = 384, lag_days: int = 5, d_model: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        self.tweets = TweetEncoder(text_dim, d_model, dropout)
        self.pool = StepPooling(d_model)
        self.position = nn.Parameter(torch.zeros(lag_days, d_model))
        self.head = TemporalHead(d_model, dropout)

    def _encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The tweets [B, L, N, d] and the steps [B, L, d]."""
        tweets = self.tweets(batch[TEXT_EMB], batch[TEXT_AGE], batch[TEXT_MASK])
        return tweets, self.pool(tweets, batch[TEXT_MASK]) + self.position

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.head(self._encode(batch)[1], batch[PAST_MASK])

    def lag_attention(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """`steps` [B, L]: the temporal attention over the lag days; `texts` [B, L, N]: each lag day's attention
        pooling of its tweets."""
        tweets, steps = self._encode(batch)
        return {
            "steps": self.head.attention(steps, batch[PAST_MASK]),
            "texts": self.pool.weights(tweets, batch[TEXT_MASK]),
        }
