"""Conditional denoising network of the diffusion decoder: noisy future path -> its correction to the noise estimate.

Shapes: B batch, H horizon, T target channels, Q condition tokens, D width. The noisy path x_t [B, H, T] becomes H
tokens (linear embedding + learned positions). Each block is DiT-like (Peebles & Xie, 2023): adaLN-zero modulation by
the diffusion timestep plus the pooled condition, self-attention over the H steps, cross-attention to the condition
tokens (the Q-Former queries, or the learned null condition of classifier-free guidance) and a gated sparse
Mixture-of-Experts MLP with top-2 routing. Gates and the output layer start at zero, so the untrained network is the
identity on its tokens and outputs zero; the forecaster adds its output to the standard-normal prior's noise estimate
(`GaussianDiffusion.prior_noise`) to predict epsilon.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from finfusion.models.multimodal.layers import Attention
from finfusion.models.multimodal.moe import SparseMoE


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding [B, dim] of diffusion timesteps t [B] (as in DDPM / Transformer positions)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return nn.functional.pad(embedding, (0, dim % 2))


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x [B, H, D] shifted and scaled per sample by shift, scale [B, D]."""
    return x * (1.0 + scale[:, None]) + shift[:, None]


class DiffusionBlock(nn.Module):
    """adaLN-zero self-attention, cross-attention to the condition, adaLN-zero sparse-MoE MLP."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        cond_dim: int,
        expert_hidden: int,
        n_experts: int,
        top_k: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model, elementwise_affine=False)
        self.self_attn = Attention(d_model, n_heads, dropout)
        self.norm_cross = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, n_heads, dropout, kv_dim=cond_dim)
        self.norm_mlp = nn.LayerNorm(d_model, elementwise_affine=False)
        self.moe = SparseMoE(d_model, expert_hidden, n_experts, top_k, dropout)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 6 * d_model))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, c: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, H, D], c [B, D] (timestep + pooled condition), cond [B, Q, D_c] -> x [B, H, D], balance loss []."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.drop(self.self_attn(_modulate(self.norm_self(x), shift1, scale1)))
        x = x + self.drop(self.cross_attn(self.norm_cross(x), cond))
        y, balance = self.moe(_modulate(self.norm_mlp(x), shift2, scale2))
        return x + gate2[:, None] * self.drop(y), balance


class DiffusionDecoder(nn.Module):
    """x_t [B, H, T], timesteps t [B], condition [B, Q, D_c] -> eps correction [B, H, T], balance []."""

    def __init__(
        self,
        horizon: int,
        n_targets: int,
        cond_dim: int,
        d_model: int = 256,
        n_heads: int = 8,
        n_layers: int = 12,
        expert_hidden: int = 1024,
        n_experts: int = 16,
        top_k: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.horizon = horizon
        self.d_model = d_model
        self.embed = nn.Linear(n_targets, d_model)
        self.position = nn.Parameter(torch.randn(horizon, d_model) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.cond_pool = nn.Linear(cond_dim, d_model)
        self.blocks = nn.ModuleList(
            DiffusionBlock(d_model, n_heads, cond_dim, expert_hidden, n_experts, top_k, dropout)
            for _ in range(n_layers)
        )
        self.norm_out = nn.LayerNorm(d_model, elementwise_affine=False)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 2 * d_model))
        self.out = nn.Linear(d_model, n_targets)
        for layer in (self.modulation_out[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x_t [B, H, T], t [B] int64, cond [B, Q, D_c] -> eps correction [B, H, T], mean MoE balance loss []."""
        c = self.time_mlp(timestep_embedding(t, self.d_model).to(x_t.dtype)) + self.cond_pool(cond.mean(dim=1))
        x = self.embed(x_t) + self.position
        balances = []
        for block in self.blocks:
            x, balance = block(x, c, cond)
            balances.append(balance)
        shift, scale = self.modulation_out(c).chunk(2, dim=-1)
        return self.out(_modulate(self.norm_out(x), shift, scale)), torch.stack(balances).mean()
