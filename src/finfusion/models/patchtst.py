"""PatchTST (Nie et al., ICLR 2023) written for finfusion: instance normalisation, patching, channel independence.

Shapes: B batch, L lookback, C input channels, T target channels, P patches, D model width, H horizon, Q quantiles.
Every channel is an independent univariate series: it is normalised by its own statistics (RevIN), cut into P
patches of `patch_len` bars every `stride` bars, encoded by one Transformer shared across channels, and mapped to
the H future steps by a flatten head shared across channels. Forecasts are denormalised back to the input scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from finfusion.models.base import Capabilities, target_positions
from finfusion.samples.contract import PAST, PAST_MASK


def num_patches(context_length: int, patch_len: int, stride: int) -> int:
    """P: how many patches of `patch_len` bars, `stride` apart, fit in `context_length` bars (the first bars drop)."""
    if context_length < patch_len:
        raise ValueError(f"context_length {context_length} is shorter than patch_len {patch_len}")
    return (context_length - patch_len) // stride + 1


class InstanceNorm(nn.Module):
    """RevIN: per-sample, per-channel standardisation over the observed bars, with an optional learned affine."""

    def __init__(self, n_channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(n_channels)) if affine else None

    def stats(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """x [B, L, C], mask [B, L] (True = observed) -> loc [B, 1, C], scale [B, 1, C]."""
        if mask is None:
            var, loc = torch.var_mean(x, dim=1, keepdim=True, correction=0)
            return loc, torch.sqrt(var + self.eps)
        weight = mask.unsqueeze(-1).to(x.dtype)
        count = weight.sum(dim=1, keepdim=True).clamp_min(1.0)
        loc = (x * weight).sum(dim=1, keepdim=True) / count
        var = (((x - loc) * weight) ** 2).sum(dim=1, keepdim=True) / count
        return loc, torch.sqrt(var + self.eps)

    def normalise(self, x: Tensor, loc: Tensor, scale: Tensor, mask: Tensor | None) -> Tensor:
        """x [B, L, C] -> standardised [B, L, C]; unobserved bars become 0 (the channel mean)."""
        z = (x - loc) / scale
        if mask is not None:
            z = z.masked_fill(~mask.unsqueeze(-1), 0.0)
        if self.weight is not None and self.bias is not None:
            z = z * self.weight + self.bias
        return z

    def denormalise(self, y: Tensor, loc: Tensor, scale: Tensor, index: Tensor | None = None) -> Tensor:
        """y [B, H, T, *] in normalised units of channels `index` [T] (all when None) -> input units."""
        extra = y.dim() - 3
        if index is not None:
            loc, scale = loc[..., index], scale[..., index]
        if self.weight is not None and self.bias is not None:
            weight = self.weight if index is None else self.weight[index]
            bias = self.bias if index is None else self.bias[index]
            y = (y - bias.view(-1, *([1] * extra))) / (weight.view(-1, *([1] * extra)) + self.eps * self.eps)
        return y * scale.view(*scale.shape, *([1] * extra)) + loc.view(*loc.shape, *([1] * extra))


def dropout_or_identity(p: float) -> nn.Module:
    """`nn.Dropout(p)`, or `nn.Identity()` when p is 0 so that training runs no no-op kernels."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class EncoderLayer(nn.Module):
    """Pre-norm Transformer layer on sequence-first tokens x [P, N, D] (N independent series of P patches).

    Laid out for speed on the CPU, where these small layers are bound by copies and kernel launches, not FLOPs: the
    fused QKV projection emits its features ordered (head, q/k/v, head dim), so with tokens stored [P, N, D] every
    series-head pair is a strided [P, head dim] matrix and q, k and v reach the batched matmuls without a copy.
    Scores are formed key-major, [N * heads, P keys, P queries], because a softmax over a short middle dimension is
    several times faster than over a short last one. Results equal the textbook layer.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.scale = (d_model // n_heads) ** -0.5
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), dropout_or_identity(dropout), nn.Linear(d_ff, d_model)
        )
        self.dropout = dropout_or_identity(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x [P, N, D] -> [P, N, D]."""
        p, n, d = x.shape
        q, k, v = (t.transpose(0, 1) for t in self.qkv(self.norm1(x)).view(p, n * self.n_heads, 3, -1).unbind(2))
        attn = self.dropout(torch.softmax(torch.bmm(k, q.transpose(1, 2)) * self.scale, dim=1))
        heads = torch.bmm(attn.transpose(1, 2), v)
        x = x + self.dropout(self.out(heads.transpose(0, 1).reshape(p, n, d)))
        return x + self.dropout(self.ff(self.norm2(x)))


class PatchTSTEncoder(nn.Module):
    """Channel-independent patch encoder: normalised series [B, L, C] -> latent tokens [B, C, P, D].

    Inside, the B * C series are one batch of sequence-first tokens [P, B * C, D] (see `EncoderLayer`).
    """

    def __init__(
        self,
        context_length: int,
        patch_len: int = 8,
        stride: int = 8,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ff: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.stride = stride
        self.n_patches = num_patches(context_length, patch_len, stride)
        self.start = context_length - ((self.n_patches - 1) * stride + patch_len)
        self.embed = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(torch.empty(self.n_patches, d_model).uniform_(-0.02, 0.02))
        self.dropout = dropout_or_identity(dropout)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def patch(self, x: Tensor) -> Tensor:
        """x [B, L, C] -> patches [P, B, C, patch_len] (the most recent bars are always in the last patch)."""
        return x[:, self.start :].unfold(1, self.patch_len, self.stride).permute(1, 0, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, L, C] (already normalised) -> tokens [B, C, P, D], a view of the layers' layout [P, B * C, D]."""
        batch, _, channels = x.shape
        tokens = self.dropout(self.embed(self.patch(x)).flatten(1, 2) + self.position.unsqueeze(1))
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens).unflatten(1, (batch, channels)).permute(1, 2, 0, 3)


class PatchTSTTower(nn.Module):
    """The PatchTST encoder as the price tower of a classifier or a fusion model: raw `past` [B, L, C] (+ `past_mask`
    [B, L]) -> RevIN -> `PatchTSTEncoder` -> patch embeddings [B, C, P, D], with `patch_mask` [B, P] (True where a
    patch holds at least one observed bar)."""

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        patch_len: int = 8,
        stride: int = 8,
        d_model: int = 32,
        n_heads: int = 2,
        n_layers: int = 1,
        d_ff: int = 64,
        dropout: float = 0.1,
        revin_affine: bool = True,
    ) -> None:
        super().__init__()
        self.norm = InstanceNorm(n_channels, affine=revin_affine)
        self.encoder = PatchTSTEncoder(context_length, patch_len, stride, d_model, n_heads, n_layers, d_ff, dropout)

    def forward(self, past: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """past [B, L, C], mask [B, L] or None -> (patches [B, C, P, D], patch_mask [B, P])."""
        loc, scale = self.norm.stats(past, mask)
        patches = self.encoder(self.norm.normalise(past, loc, scale, mask))
        encoder = self.encoder
        if mask is None:
            return patches, torch.ones(past.shape[0], encoder.n_patches, dtype=torch.bool, device=past.device)
        return patches, mask[:, encoder.start :].unfold(1, encoder.patch_len, encoder.stride).any(dim=-1)


class PatchTST(nn.Module, Capabilities):
    """PatchTST forecaster: `past` [B, L, C] (+ `past_mask` [B, L]) -> `point` [B, H, T] (+ `quantiles` [B, H, T, Q]).

    Targets are the input channels `target_index` (all C when None), forecast in the input's units. Because channels
    are independent, only the target channels are encoded. The flatten head (P * D -> H, plus H * Q with quantiles,
    one fused Linear) is shared by all channels.
    """

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"point", "quantiles"})
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        horizon: int,
        patch_len: int = 8,
        stride: int = 8,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ff: int = 256,
        dropout: float = 0.1,
        head_dropout: float = 0.0,
        target_index: Sequence[int] | None = None,
        quantile_levels: Sequence[float] | None = None,
        revin_affine: bool = True,
    ) -> None:
        super().__init__()
        self.horizon = horizon
        targets = target_positions(target_index, n_channels)
        self.register_buffer("target_index", torch.tensor(targets, dtype=torch.long), persistent=False)
        self.all_targets = targets == list(range(n_channels))
        self.norm = InstanceNorm(n_channels, affine=revin_affine)
        self.encoder = PatchTSTEncoder(context_length, patch_len, stride, d_model, n_heads, n_layers, d_ff, dropout)
        flat = self.encoder.n_patches * d_model
        self.head_dropout = dropout_or_identity(head_dropout)
        levels = [] if quantile_levels is None else sorted(float(q) for q in quantile_levels)
        self.register_buffer("quantile_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.head = nn.Linear(flat, horizon * (1 + len(levels)))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch `past` [B, L, C], optional `past_mask` [B, L] -> `point` [B, H, T], `quantiles` [B, H, T, Q]."""
        past = batch[PAST]
        mask = batch.get(PAST_MASK)
        loc, scale = self.norm.stats(past, mask)
        z = self.norm.normalise(past, loc, scale, mask)
        sel = None if self.all_targets else self.target_index
        tokens = self.encoder(z if sel is None else z[..., sel])
        projected = self.head(self.head_dropout(tokens.flatten(2)))
        point = projected[..., : self.horizon].transpose(1, 2)
        out = {"point": self.norm.denormalise(point, loc, scale, sel)}
        if len(self.quantile_levels):
            q = projected[..., self.horizon :].unflatten(-1, (self.horizon, -1)).transpose(1, 2)
            out["quantiles"] = torch.sort(self.norm.denormalise(q, loc, scale, sel), dim=-1).values
        return out
