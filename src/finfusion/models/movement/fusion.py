"""Price + text movement model for lag-step samples: price-queried cross-attention over each step's tweets.

Per step l (B batch, L steps, N tweets, D text dim, d width):
- price  `past` [B, L, C] -> `StepPriceEncoder` -> p [B, L, d]
- tweets `text_emb` [B, L, N, D], `text_age` [B, L, N] -> `TweetEncoder` -> t [B, L, N, d]
- context c_l = multi-head attention of query p_l over keys/values [null; t_l] under `text_mask` [B, L, N]; the
  learned null slot lets a step attend to nothing (and keeps steps without tweets well defined)
- pooled text s [B, L, d] = `StepPooling`(t) (the text-only pathway, independent of price)
- fused step f = LayerNorm(p + c + s), then a residual feed-forward block
`TemporalHead` (GRU + temporal attention) over f under `past_mask` [B, L] returns `logits` [B, 2].
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.models.movement.parts import (
    LatentClassifier,
    StepPooling,
    TemporalHead,
    TweetEncoder,
    masked_softmax,
)
from finfusion.models.movement.price import StepPriceEncoder
from finfusion.samples.contract import PAST, PAST_MASK, TEXT_AGE, TEXT_EMB, TEXT_MASK


class StepCrossAttention(nn.Module):
    """Each step's query [B, L, d] attends (multi-head) to its own tweets [B, L, N, d] under `mask` [B, L, N] plus a
    learned null slot. Keys and values are computed for the real tweets only (most slots are padding)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.null = nn.Parameter(torch.zeros(2 * d_model))
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _attend(self, query: Tensor, tweets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The attention weights [B, L, h, N+1] (slot 0 the null slot) and the values [B, L, N+1, h, d/h]."""
        b, steps, n, d = tweets.shape
        h = self.heads
        packed = self.key_value(tweets[mask])  # [T, 2d]
        kv = torch.cat([self.null.expand(b, steps, 1, 2 * d), packed.new_zeros(b, steps, n, 2 * d)], dim=2)
        slots = torch.cat([mask.new_ones(b, steps, 1), mask], dim=2)  # [B, L, N+1]
        kv[:, :, 1:][mask] = packed
        keys, values = kv.view(b, steps, n + 1, 2, h, d // h).unbind(dim=3)  # [B, L, N+1, h, d/h] each
        q = self.query(query).view(b, steps, h, d // h)
        scores = torch.einsum("blhe,blkhe->blhk", q, keys) / (d // h) ** 0.5  # [B, L, h, N+1]
        return masked_softmax(scores, slots.unsqueeze(2), dim=-1), values

    def weights(self, query: Tensor, tweets: Tensor, mask: Tensor) -> Tensor:
        """Each step's attention [B, L, N] on its tweets, averaged over the heads (the rest is on the null slot)."""
        return self._attend(query, tweets, mask)[0].mean(dim=2)[..., 1:]

    def forward(self, query: Tensor, tweets: Tensor, mask: Tensor) -> Tensor:
        weights, values = self._attend(query, tweets, mask)
        context = torch.einsum("blhk,blkhe->blhe", self.dropout(weights), values)
        return self.out(context.reshape(query.shape))


class MovementFusion(LatentClassifier, nn.Module, Capabilities):
    """Up/down logits [B, 2] from the price channels and the tweets of the lag steps."""

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK, TEXT_EMB, TEXT_MASK, TEXT_AGE})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits", "latent"})

    def __init__(
        self,
        n_channels: int,
        text_dim: int = 384,
        lag_days: int = 5,
        d_model: int = 64,
        n_heads: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.price = StepPriceEncoder(n_channels, lag_days, d_model)
        self.tweets = TweetEncoder(text_dim, d_model, dropout)
        self.cross = StepCrossAttention(d_model, n_heads, dropout)
        self.pool = StepPooling(d_model)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d_model, d_model)
        )
        self.head = TemporalHead(d_model, dropout)

    def _encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The price steps p [B, L, d], the tweets t [B, L, N, d] and the fused steps f [B, L, d]."""
        price = self.price(batch[PAST])
        tweets = self.tweets(batch[TEXT_EMB], batch[TEXT_AGE], batch[TEXT_MASK])
        mask = batch[TEXT_MASK]
        fused = self.norm(price + self.cross(price, tweets, mask) + self.pool(tweets, mask))
        return price, tweets, fused + self.ffn(fused)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """-> `logits` [B, 2], `latent` [B, 2d]."""
        return self.head(self._encode(batch)[2], batch[PAST_MASK])

    def lag_attention(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """`steps` [B, L]: the temporal attention over the lag days; `texts` [B, L, N]: each lag day's price-queried
        cross-attention on its tweets (mean over heads; the rest of the day's attention is on the null slot)."""
        price, tweets, fused = self._encode(batch)
        return {
            "steps": self.head.attention(fused, batch[PAST_MASK]),
            "texts": self.cross.weights(price, tweets, batch[TEXT_MASK]),
        }
