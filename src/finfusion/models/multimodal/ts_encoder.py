"""PatchTST time-series encoder of the multimodal forecaster: log-return patches -> latent tokens.

Shapes: B batch, L lookback, C channels, P patches per channel, D width. As in PatchTST (Nie et al., 2023) every
channel is cut into P patches of `patch_len` bars every `stride` bars (the most recent bar always ends the last patch)
and encoded by one Transformer shared across channels (channel independence); a learned channel embedding tells the
channels apart once their tokens are pooled into one sequence [B, C * P, D] for the Q-Former.

No instance normalisation: inputs are already normalised per symbol on the training span (samples/windows.py), and
keeping their level visible lets the decoder read the volatility regime from the latents.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.models.multimodal.layers import TransformerBlock
from finfusion.models.patchtst import num_patches


class PatchTSTLatentEncoder(nn.Module):
    """`past` [B, L, C] (+ `past_mask` [B, L]) -> tokens [B, C * P, D] and their mask [B, C * P] (True = observed)."""

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        patch_len: int = 6,
        stride: int = 3,
        d_model: int = 128,
        n_heads: int = 8,
        n_layers: int = 8,
        d_ff: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.context_length = context_length
        self.patch_len = patch_len
        self.stride = stride
        self.n_patches = num_patches(context_length, patch_len, stride)
        self.start = context_length - ((self.n_patches - 1) * stride + patch_len)
        self.embed = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(torch.randn(self.n_patches, d_model) * 0.02)
        self.channel = nn.Parameter(torch.randn(n_channels, d_model) * 0.02)
        self.layers = nn.ModuleList(TransformerBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def patch_mask(self, past_mask: Tensor) -> Tensor:
        """past_mask [B, L] -> [B, P]: a patch exists when any of its bars does; the last patch always exists."""
        observed = past_mask[:, self.start :].float().unfold(-1, self.patch_len, self.stride).amax(dim=-1) > 0
        observed[:, -1] = True
        return observed

    def forward(self, past: Tensor, past_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """past [B, L, C], past_mask [B, L] -> tokens [B, C * P, D], mask [B, C * P]."""
        batch, length, channels = past.shape
        if length != self.context_length or channels != self.n_channels:
            raise FinfusionError(
                f"past has shape [B, {length}, {channels}] but the encoder expects "
                f"[B, {self.context_length}, {self.n_channels}] (context_length, n_channels)"
            )
        if past_mask is None:
            past_mask = torch.ones(batch, length, dtype=torch.bool, device=past.device)
        x = past.masked_fill(~past_mask.unsqueeze(-1), 0.0)
        patches = x[:, self.start :].transpose(1, 2).unfold(-1, self.patch_len, self.stride)  # [B, C, P, patch_len]
        tokens = self.embed(patches) + self.position
        mask = self.patch_mask(past_mask)  # [B, P]
        flat = tokens.reshape(batch * channels, self.n_patches, -1)
        flat_mask = mask.repeat_interleave(channels, dim=0)
        for layer in self.layers:
            flat = layer(flat, flat_mask)
        tokens = self.norm(flat).view(batch, channels, self.n_patches, -1) + self.channel[:, None, :]
        return tokens.flatten(1, 2), mask.repeat(1, channels)
