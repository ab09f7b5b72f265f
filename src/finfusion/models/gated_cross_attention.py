"""A gated cross-attention adapter (Flamingo-style): one sequence of states reads another through attention, and a
learned gate, initialised near closed, decides how much of what it read is added.

Shapes: B batch, L states (e.g. token positions), M context items (e.g. price patches or texts), D width.

    out = h + tanh(alpha) * Attention(q = LayerNorm(h), k = v = LayerNorm(c), keys where `context_mask`)

h [B, L, D] the states, c [B, M, D] the context, `context_mask` [B, M] (True: a real item; None: all are), alpha [D]
the gate, one value per channel, initialised to `gate_init` (small: at initialisation the output is the states
themselves up to a perturbation of order tanh(gate_init), so an adapter added to a trained encoder starts from what
that encoder computes). A row whose context is all masked gets no update (out = h): it has nothing to read.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedCrossAttention(nn.Module):
    """See the module docstring."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, gate_init: float = 0.01) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.gate = nn.Parameter(torch.full((dim,), float(gate_init)))

    def forward(self, states: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """states [B, L, D], context [B, M, D], context_mask [B, M] or None -> [B, L, D]."""
        keys = self.context_norm(context)
        if context_mask is None:
            attended = self.attention(self.norm(states), keys, keys, need_weights=False)[0]
        else:
            empty = ~context_mask.any(dim=1)  # [B]: rows with nothing to read
            ignored = ~(context_mask | empty[:, None])  # such rows attend to their padding, then drop the result
            attended = self.attention(self.norm(states), keys, keys, key_padding_mask=ignored, need_weights=False)[0]
            attended = attended.masked_fill(empty[:, None, None], 0.0)
        return states + torch.tanh(self.gate) * attended
