"""Time2Vec (Kazemi et al., 2019): a learnable embedding of a time value, one linear and k - 1 periodic components."""

from __future__ import annotations

import torch
from torch import nn


class Time2Vec(nn.Module):
    """t -> [w_0 t + b_0, sin(w_1 t + b_1), ..., sin(w_{k-1} t + b_{k-1})] with learned w, b.

    Input: times [B, L] or [B, L, 1] (e.g. bar index, or days since an origin, scaled to a few units).
    Output: [B, L, k]; component 0 follows trends, the sine components learn periods (daily, weekly, ...) from data.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"Time2Vec needs k >= 1 components, got {k}")
        self.k = k
        self.linear = nn.Linear(1, 1)
        self.periodic = nn.Linear(1, k - 1) if k > 1 else None

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t [B, L] or [B, L, 1] -> [B, L, k]."""
        if t.dim() == 2:
            t = t.unsqueeze(-1)
        if t.dim() != 3 or t.shape[-1] != 1:
            raise ValueError(f"Time2Vec expects times shaped [B, L] or [B, L, 1], got {tuple(t.shape)}")
        trend = self.linear(t)
        if self.periodic is None:
            return trend
        return torch.cat([trend, torch.sin(self.periodic(t))], dim=-1)
