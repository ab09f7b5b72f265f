"""Cross-modal Q-Former (after BLIP-2): a fixed set of learned queries attends jointly to time-series and text latents.

Shapes: B batch, K_ts time-series tokens, N texts, Q queries, D width. Each layer runs self-attention among the
queries, cross-attention from the queries to one memory sequence [register, time-series tokens, text tokens], and a
feed-forward. Both modalities are projected to D and tagged with a learned modality embedding. Padded text slots and
unobserved patches are masked out of the cross-attention, so padding never changes the output; the always-present
register token gives the queries somewhere to look when a sample has no text.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from finfusion.models.multimodal.layers import TransformerBlock


class QFormer(nn.Module):
    """ts tokens [B, K_ts, D_ts] (+ mask) and optional text tokens [B, N, D_text] (+ mask) -> queries [B, Q, D]."""

    def __init__(
        self,
        ts_dim: int,
        text_dim: int | None,
        d_model: int = 256,
        n_heads: int = 8,
        n_layers: int = 12,
        d_ff: int = 1024,
        n_queries: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_queries, d_model) * 0.02)
        self.register = nn.Parameter(torch.randn(1, d_model) * 0.02)
        self.ts_proj = nn.Sequential(nn.Linear(ts_dim, d_model), nn.LayerNorm(d_model))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d_model), nn.LayerNorm(d_model)) if text_dim else None
        self.modality = nn.Parameter(torch.randn(2, d_model) * 0.02)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout, cross=True) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def memory(
        self, ts: Tensor, ts_mask: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The keys the queries attend to: [B, 1 + K_ts (+ N), D] and their mask."""
        batch = ts.shape[0]
        parts = [self.register.expand(batch, 1, -1), self.ts_proj(ts) + self.modality[0]]
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=ts.device), ts_mask]
        if text is not None and self.text_proj is not None:
            if text_mask is None:
                text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
            parts.append(self.text_proj(text) + self.modality[1])
            masks.append(text_mask)
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def forward(
        self, ts: Tensor, ts_mask: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None
    ) -> Tensor:
        """ts [B, K_ts, D_ts], ts_mask [B, K_ts], text [B, N, D_text], text_mask [B, N] -> [B, Q, D]."""
        memory, memory_mask = self.memory(ts, ts_mask, text, text_mask)
        x = self.queries.expand(ts.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, memory=memory, memory_mask=memory_mask)
        return self.norm(x)

    def attention_maps(
        self, ts: Tensor, ts_mask: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None
    ) -> Tensor:
        """The queries' cross-attention weights over the memory [register, ts tokens, texts], averaged over heads:
        [B, n_layers, Q, 1 + K_ts (+ N)]; masked keys get 0."""
        memory, memory_mask = self.memory(ts, ts_mask, text, text_mask)
        x = self.queries.expand(ts.shape[0], -1, -1)
        maps = []
        for layer in self.layers:
            maps.append(layer.cross_attention_weights(x, memory, memory_mask).mean(dim=1))
            x = layer(x, memory=memory, memory_mask=memory_mask)
        return torch.stack(maps, dim=1)
