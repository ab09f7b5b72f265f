"""Any-variate attention (Moirai): all variates of a sample flattened into one token sequence.

Shapes: B rows, N tokens, D width, K heads, E = D / K head width. Time enters through rotary positions of each
token's `time_id` on the first half of every head's query/key dimensions (pairs rotated together); variates enter
through a learned bias per head, one value for a key of the same variate as the query and one for another variate,
so the layer is equivariant to the order of variates and takes any number of them. Queries and keys are
RMS-normalised per head before the rotation. Tokens attend only to tokens of the same sample (`attention_mask`,
from the packing), so several samples share a row without seeing each other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Fraction of each head's dimensions that carry the rotary time position (the rest carry none).
ROTARY_FRACTION = 0.5
ROTARY_BASE = 10_000.0
NORM_EPS = 1e-5


class VariateBias(nn.Module):
    """Learned attention bias per head: `emb.weight[1]` between tokens of one variate, `emb.weight[0]` across."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(2, n_heads)

    def forward(self, variate_id: Tensor) -> Tensor:
        """variate_id [B, N] -> bias [B, K, N, N]."""
        same = (variate_id[:, :, None] == variate_id[:, None, :])[:, None]
        other, own = self.emb.weight[0], self.emb.weight[1]
        return torch.where(same, own[None, :, None, None], other[None, :, None, None])


def rotate_by_time(x: Tensor, time_id: Tensor) -> Tensor:
    """Rotary position on x [B, K, N, W] (W even) at positions time_id [B, N]: each pair (2i, 2i+1) turns by
    time_id * base^(-2i/W)."""
    width = x.shape[-1]
    theta = 1.0 / torch.pow(ROTARY_BASE, torch.arange(0, width, 2, device=x.device, dtype=torch.float32) / width)
    angle = (time_id.to(torch.float32)[..., None] * theta).repeat_interleave(2, dim=-1)[:, None]  # [B, 1, N, W]
    pairs = x.unflatten(-1, (width // 2, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (torch.cos(angle) * x + torch.sin(angle) * turned).to(x.dtype)


class AnyVariateAttention(nn.Module):
    """Multi-head self-attention over tokens x [B, N, D] with rotary time and binary variate biases."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.rotary_width = int(self.head_dim * ROTARY_FRACTION)
        if self.rotary_width % 2:
            raise ValueError(f"head width {self.head_dim} leaves an odd rotary width {self.rotary_width}")
        self.attn_dropout = attn_dropout
        self.var_attn_bias = VariateBias(n_heads)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=NORM_EPS)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=NORM_EPS)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)  # [B, K, N, E]

    def _rotate(self, x: Tensor, time_id: Tensor) -> Tensor:
        w = self.rotary_width
        return torch.cat((rotate_by_time(x[..., :w], time_id), x[..., w:]), dim=-1)

    def forward(self, x: Tensor, attention_mask: Tensor, variate_id: Tensor, time_id: Tensor) -> Tensor:
        """x [B, N, D], attention_mask [B, N, N] (True = may attend), variate_id / time_id [B, N] -> [B, N, D]."""
        q = self._rotate(self.q_norm(self._heads(self.q_proj(x))), time_id)
        k = self._rotate(self.k_norm(self._heads(self.k_proj(x))), time_id)
        v = self._heads(self.v_proj(x))
        bias = self.var_attn_bias(variate_id).to(q.dtype)
        bias = bias.masked_fill(~attention_mask[:, None], float("-inf"))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias,
            dropout_p=self.attn_dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(self.head_dim),
        )
        return self.out_proj(out.transpose(1, 2).flatten(-2))
