"""Moirai's Transformer encoder: pre-norm layers of any-variate attention and a gated SiLU feed-forward, RMSNorm
throughout, a final RMSNorm. Shapes: B rows, N tokens, D width."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from finfusion.models.moirai.attention import NORM_EPS, AnyVariateAttention


def glu_width(d_model: int) -> int:
    """Hidden width of the gated feed-forward: 2/3 of 4 D, rounded up to a multiple of 8 (1,024 for D = 384)."""
    return (int(4 * d_model * 2 / 3) + 7) // 8 * 8


class GatedFeedForward(nn.Module):
    """fc2(silu(fc_gate(x)) * fc1(x)), no biases, dropout after the gate and after fc2."""

    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        hidden = glu_width(d_model)
        self.fc1 = nn.Linear(d_model, hidden, bias=False)
        self.fc_gate = nn.Linear(d_model, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d_model, bias=False)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout2(self.fc2(self.dropout1(F.silu(self.fc_gate(x)) * self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.self_attn = AnyVariateAttention(d_model, n_heads, attn_dropout)
        self.ffn = GatedFeedForward(d_model, dropout)
        self.norm1 = nn.RMSNorm(d_model, eps=NORM_EPS)
        self.norm2 = nn.RMSNorm(d_model, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attention_mask: Tensor, variate_id: Tensor, time_id: Tensor) -> Tensor:
        x = x + self.dropout(self.self_attn(self.norm1(x), attention_mask, variate_id, time_id))
        return x + self.ffn(self.norm2(x))


class Encoder(nn.Module):
    """`n_layers` layers of width `d_model` with d_model / 64 heads (Moirai's rule)."""

    def __init__(self, d_model: int, n_layers: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        n_heads = max(1, d_model // 64)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, dropout, attn_dropout) for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model, eps=NORM_EPS)

    def forward(self, x: Tensor, attention_mask: Tensor, variate_id: Tensor, time_id: Tensor) -> Tensor:
        """x [B, N, D] -> [B, N, D]."""
        for layer in self.layers:
            x = layer(x, attention_mask, variate_id, time_id)
        return self.norm(x)
