"""Transformer building blocks shared by the multimodal forecaster's components.

Shapes: B batch, M query tokens, K key tokens, D width. Key masks are bool [B, K], True where a key exists; every
query must see at least one key (callers guarantee it, e.g. with an always-present register token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of tokens x [B, K, D] over the keys where mask [B, K] is True (all when None) -> [B, D]; 0 when none."""
    if mask is None:
        return x.mean(dim=1)
    weight = mask.to(x.dtype).unsqueeze(-1)
    return (x * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error of `pred` [B, H, T] against `target` [B, H, T] over the steps where `mask` [B, H] is True
    (all when None); 0 when none."""
    error = (pred - target) ** 2
    if mask is None:
        return error.mean()
    weight = mask.to(error.dtype).unsqueeze(-1).expand_as(error)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


class Attention(nn.Module):
    """Multi-head attention of queries x [B, M, D] to keys/values `memory` [B, K, D_kv] (x itself when None)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, kv_dim: int | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(kv_dim or d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: Tensor, memory: Tensor | None = None, key_mask: Tensor | None = None, causal: bool = False
    ) -> Tensor:
        """x [B, M, D], memory [B, K, D_kv], key_mask [B, K] (True = attend) -> [B, M, D]."""
        batch, m, d = x.shape
        source = x if memory is None else memory
        q = self.q(x).view(batch, m, self.n_heads, -1).transpose(1, 2)
        k, v = self.kv(source).view(batch, source.shape[1], 2, self.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        if causal:
            keep = torch.ones(m, source.shape[1], dtype=torch.bool, device=x.device).tril()
            mask = keep if mask is None else mask & keep
        drop = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.out(attended.transpose(1, 2).reshape(batch, m, d))

    def weights(self, x: Tensor, memory: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """The attention weights [B, heads, M, K] of queries x [B, M, D] over `memory` [B, K, D_kv] (key_mask [B, K],
        True = attend): what `forward` mixes the values with, for explanations."""
        batch, m, _ = x.shape
        q = self.q(x).view(batch, m, self.n_heads, -1).transpose(1, 2)
        k = self.kv(memory).view(batch, memory.shape[1], 2, self.n_heads, -1)[:, :, 0].transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return scores.softmax(dim=-1)


class FeedForward(nn.Module):
    """Two-layer GELU MLP D -> hidden -> D on x [..., D]."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_model))

    def forward(self, x: Tensor) -> Tensor:
        """x [..., D] -> [..., D]."""
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention (optionally causal), optional cross-attention to a memory, feed-forward."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        cross: bool = False,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, n_heads, dropout)
        self.norm_cross = nn.LayerNorm(d_model) if cross else None
        self.cross_attn = Attention(d_model, n_heads, dropout) if cross else None
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """x [B, M, D] (mask [B, M]), memory [B, K, D] (memory_mask [B, K]) -> [B, M, D]."""
        x = x + self.drop(self.self_attn(self.norm_self(x), key_mask=mask, causal=self.causal))
        if self.cross_attn is not None and self.norm_cross is not None:
            if memory is None:
                raise ValueError("a cross-attention block needs a memory")
            x = x + self.drop(self.cross_attn(self.norm_cross(x), memory, memory_mask))
        return x + self.drop(self.ff(self.norm_ff(x)))

    def cross_attention_weights(
        self, x: Tensor, memory: Tensor, memory_mask: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """The cross-attention weights [B, heads, M, K] this block applies to x [B, M, D] over memory [B, K, D]."""
        if self.cross_attn is None or self.norm_cross is None:
            raise ValueError("a block without cross-attention has no cross-attention weights")
        x = x + self.drop(self.self_attn(self.norm_self(x), key_mask=mask, causal=self.causal))
        return self.cross_attn.weights(self.norm_cross(x), memory, memory_mask)
