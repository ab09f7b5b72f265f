"""Teacher-forced price reconstruction head: an auxiliary causal decoder that reads the fused condition.

Shapes: B batch, H horizon, T target channels, Q condition tokens, D width. Step h is predicted from the condition
and the TRUE values of the steps before it (teacher forcing): the input sequence is [last observed target value,
future_0, ..., future_{H-2}], causal self-attention keeps step h from seeing steps >= h, and cross-attention reads the
Q-Former tokens. Its MSE against `future` trains the encoders and the Q-Former directly (seed 000's auxiliary
"price reconstruction (teacher-forced MSE)"); it is not used for sampling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from finfusion.models.multimodal.layers import TransformerBlock


class TeacherForcedHead(nn.Module):
    """last [B, 1, T], future [B, H, T] (teacher inputs), condition [B, Q, D] -> one-step predictions [B, H, T]."""

    def __init__(
        self, horizon: int, n_targets: int, d_model: int, n_heads: int, n_layers: int, d_ff: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(n_targets, d_model)
        self.position = nn.Parameter(torch.randn(horizon, d_model) * 0.02)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout, cross=True, causal=True) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, n_targets)

    def forward(self, last: Tensor, future: Tensor, cond: Tensor) -> Tensor:
        """last [B, 1, T], future [B, H, T], cond [B, Q, D] -> predictions of future [B, H, T]."""
        inputs = torch.cat([last, future[:, :-1]], dim=1)
        x = self.embed(inputs) + self.position
        for layer in self.layers:
            x = layer(x, memory=cond)
        return self.out(self.norm(x))
