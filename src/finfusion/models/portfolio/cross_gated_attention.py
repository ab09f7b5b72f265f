"""Cross-Gated Attention (seed 002): each of two streams attends to the other, and a sigmoid gate decides how much of
what it attended to replaces its own features.

Shapes: B batch, A tokens per stream (assets), D width. With N the news tokens and M the market tokens:

    Ñ = g_N ⊙ Attn(N → M) + (1 - g_N) ⊙ N,    g_N = sigmoid(W_N [N; Attn(N → M)] + b_N)
    M̃ = g_M ⊙ Attn(M → N) + (1 - g_M) ⊙ M,    g_M = sigmoid(W_M [M; Attn(M → N)] + b_M)

Attn(X → Y) is multi-head attention with queries from X and keys and values from Y. A gate of 0 returns the stream
unchanged; a gate of 1 replaces it by what it attended to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gated_residual(stream: Tensor, attended: Tensor, gate: Tensor) -> Tensor:
    """gate ⊙ attended + (1 - gate) ⊙ stream (all [..., D], gate in [0, 1])."""
    return gate * attended + (1.0 - gate) * stream


class CrossAttention(nn.Module):
    """Multi-head attention of queries x [B, Q, D] over keys and values y [B, K, D] -> [B, Q, D].

    `key_mask` [B, K] (True = may be attended to) hides keys; a row with no visible key attends to all of them.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, T, D] -> [B, heads, T, D / heads]."""
        return x.view(*x.shape[:2], self.n_heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, y: Tensor, key_mask: Tensor | None = None) -> Tensor:
        mask = None
        if key_mask is not None:
            visible = key_mask | ~key_mask.any(dim=-1, keepdim=True)
            mask = visible[:, None, None, :]  # [B, 1, 1, K]
        q, k, v = self._heads(self.query(x)), self._heads(self.key(y)), self._heads(self.value(y))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, Q, D / heads]
        return self.out(attended.transpose(1, 2).reshape(x.shape))


class CrossGatedAttention(nn.Module):
    """Both directions of the module docstring: (news [B, A, D], market [B, A, D]) -> (Ñ [B, A, D], M̃ [B, A, D]).

    `mask` [B, A] (True = the token exists, e.g. the asset has bars in the window) hides missing tokens as keys.
    """

    def __init__(self, d_model: int, n_heads: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.news_to_market = CrossAttention(d_model, n_heads)
        self.market_to_news = CrossAttention(d_model, n_heads)
        self.news_gate = nn.Linear(2 * d_model, d_model)
        self.market_gate = nn.Linear(2 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def gate(layer: nn.Linear, stream: Tensor, attended: Tensor) -> Tensor:
        """sigmoid(W [stream; attended] + b) [..., D]."""
        return torch.sigmoid(layer(torch.cat([stream, attended], dim=-1)))

    def forward(self, news: Tensor, market: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        attended_news = self.dropout(self.news_to_market(news, market, mask))
        attended_market = self.dropout(self.market_to_news(market, news, mask))
        news_gate = self.gate(self.news_gate, news, attended_news)
        market_gate = self.gate(self.market_gate, market, attended_market)
        return (
            gated_residual(news, attended_news, news_gate),
            gated_residual(market, attended_market, market_gate),
        )
