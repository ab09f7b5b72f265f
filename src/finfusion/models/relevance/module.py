"""The dual-tower relevance model (seed 004) as a pure module: how strongly, and in which direction, a context
(news, policy, macro) bears on a stock over each horizon.

    context [B, Fc] -> context tower -> c [B, Ec]                      (Ec = 32)
    stock   [B, Fs] -> stock tower   -> s [B, Es] -> projection -> p [B, Ec]   (Es = 64)
    joint = c * p [B, Ec] -> one relevance head per horizon -> score [B], direction logits [B, 2]

The seed's heads read a 32-wide input; here that input is the context embedding gated element-wise by the stock's
projection into the same space, so that one context can bear on one stock and not on another (the seed leaves the
pairing unstated). The towers stay separate until the gate; the orthogonality regulariser (training/relevance_loss.py)
keeps c and p from collapsing onto each other.

Outputs: `score` [B, K] in [-1, 1], `direction_logits` [B, K, 2] (down, up), `context_embedding` [B, Ec],
`stock_embedding` [B, Es], `stock_projection` [B, Ec].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.models.relevance.head import RelevanceHead
from finfusion.models.relevance.towers import FeatureTower
from finfusion.samples.contract import CONTEXT, STOCK


class DualTowerRelevance(nn.Module, Capabilities):
    """See the module docstring. `context_dim` / `stock_dim` and `horizons` (days) come from the data."""

    inputs: ClassVar[frozenset[str]] = frozenset({CONTEXT, STOCK})
    outputs: ClassVar[frozenset[str]] = frozenset(
        {"score", "direction_logits", "context_embedding", "stock_embedding", "stock_projection"}
    )

    def __init__(
        self,
        context_dim: int,
        stock_dim: int,
        horizons: Sequence[int] = (7, 30),
        context_hidden: Sequence[int] = (128, 64),
        stock_hidden: Sequence[int] = (256, 128),
        context_embedding_dim: int = 32,
        stock_embedding_dim: int = 64,
        context_dropout: float = 0.2,
        stock_dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.horizons = [int(h) for h in horizons]
        self.context_tower = FeatureTower(context_dim, context_hidden, context_embedding_dim, context_dropout)
        self.stock_tower = FeatureTower(stock_dim, stock_hidden, stock_embedding_dim, stock_dropout)
        self.stock_projection = nn.Linear(stock_embedding_dim, context_embedding_dim, bias=False)
        self.heads = nn.ModuleList(RelevanceHead(context_embedding_dim) for _ in self.horizons)

    def extract_embeddings(self, context: Tensor, stock: Tensor) -> tuple[Tensor, Tensor]:
        """The context [B, Ec] and stock [B, Es] embeddings."""
        return self.context_tower(context), self.stock_tower(stock)

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        context, stock = self.extract_embeddings(batch[CONTEXT], batch[STOCK])
        projection = self.stock_projection(stock)
        joint = context * projection
        scores, logits = zip(*(head(joint) for head in self.heads), strict=True)
        return {
            "score": torch.stack(scores, dim=1),
            "direction_logits": torch.stack(logits, dim=1),
            "context_embedding": context,
            "stock_embedding": stock,
            "stock_projection": projection,
        }
