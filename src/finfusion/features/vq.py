"""Learned candle tokens: normalised trailing candle patches and a VQ-VAE that maps each patch to one codebook entry.

A patch for bar t holds the `patch_len` bars of its symbol ending at t (rows t - patch_len + 1 .. t, consecutive rows
of that symbol), so a patch, and any token made from it, is known at t's close (point-in-time by construction).

Normalisation uses the patch alone (nothing is fitted across patches or time):

- prices are split-adjusted (`price * adj_factor` when the column is there) and taken as logs;
- open/high/low/close become `(log price - log close[t]) / s`, where `s` is the patch's mean log range
  `mean(log high - log low)` (floored at `MIN_SCALE`), so the last close is 0 and a typical candle is one unit tall;
- volume (optional) becomes `log1p(volume / adj_factor)` minus its mean over the patch;
- every value is clipped to [-CLIP, CLIP].

Tokens therefore describe the shape of recent candles (relative moves, wicks, volume profile), not the price level or
the volatility level. Split adjustment only enters through ratios of `adj_factor` inside the patch, which depend only
on splits inside the patch, so a later split does not change an earlier patch.
"""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import numpy as np
import polars as pl
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

from finfusion.data.schema import PRICE_FIELDS
from finfusion.errors import FinfusionError

#: Floor of a patch's mean log range (1 basis point), so flat patches do not blow up.
MIN_SCALE = 1e-4
#: Normalised values are clipped to [-CLIP, CLIP].
CLIP = 10.0


def patch_channels(volume: bool) -> tuple[str, ...]:
    """Channel names of a patch, in order: open, high, low, close and, with `volume`, volume."""
    return (*PRICE_FIELDS, "volume") if volume else PRICE_FIELDS


def candle_patches(bars: pl.DataFrame, patch_len: int, *, volume: bool = True) -> tuple[Tensor, pl.DataFrame]:
    """Normalised trailing candle patches of every bar with at least `patch_len - 1` earlier bars of its symbol.

    `bars`: BARS rows (symbol, ts, open, high, low, close, optional volume and adj_factor), any order.
    Returns `(patches, index)`: `patches` float32 [N, patch_len, C] (C = 5 with volume, else 4; channels as in
    `patch_channels`), and `index` [N] with columns symbol, ts (the last bar of each patch), sorted by (symbol, ts).
    Bars with fewer than `patch_len - 1` earlier bars, and patches holding a missing or non-positive value, give no
    patch. See the module docstring for the normalisation.
    """
    if patch_len < 2:
        raise FinfusionError(f"patch_len must be >= 2, got {patch_len}")
    channels = patch_channels(volume)
    missing = [
        c for c in ("symbol", "ts", *channels) if c not in bars.columns or 0 < bars.height == bars[c].null_count()
    ]
    if missing:
        raise FinfusionError(f"candle patches need {', '.join(missing)}, which these bars do not have (or all empty)")
    adj = pl.col("adj_factor").fill_null(1.0) if "adj_factor" in bars.columns else pl.lit(1.0)
    logs = [(pl.col(c) * adj).log().alias(c) for c in PRICE_FIELDS]
    if volume:
        logs.append((pl.col("volume") / adj).log1p().alias("volume"))
    frame = bars.sort("symbol", "ts").select("symbol", "ts", *logs, pl.int_range(pl.len()).over("symbol").alias("_pos"))
    values = frame.select(channels).to_numpy().astype(np.float64)  # [n, C], nulls as NaN
    if frame.height < patch_len:
        empty = torch.zeros((0, patch_len, len(channels)), dtype=torch.float32)
        return empty, frame.select("symbol", "ts").clear()
    windows = sliding_window_view(values, patch_len, axis=0).transpose(0, 2, 1)  # [n - L + 1, L, C]
    full = frame["_pos"].to_numpy()[patch_len - 1 :] >= patch_len - 1  # window stays inside one symbol
    keep = full & np.isfinite(windows).all(axis=(1, 2))
    patches = normalise_patches(windows[keep])
    index = frame.select("symbol", "ts").slice(patch_len - 1).filter(pl.Series(keep))
    return torch.from_numpy(patches.astype(np.float32)), index


def normalise_patches(windows: np.ndarray) -> np.ndarray:
    """Normalise raw log-price windows [N, L, C] (log open, high, low, close, optional log1p volume) to [N, L, C]."""
    prices = windows[..., :4] - windows[:, -1:, 3:4]
    scale = np.maximum((windows[..., 1] - windows[..., 2]).mean(axis=1), MIN_SCALE)  # [N]
    parts = [prices / scale[:, None, None]]
    if windows.shape[-1] > 4:
        parts.append(windows[..., 4:] - windows[..., 4:].mean(axis=1, keepdims=True))
    return np.clip(np.concatenate(parts, axis=-1), -CLIP, CLIP)


class VQOutput(NamedTuple):
    """`recon` [B, L, C] reconstruction, `codes` [B] int64 codebook indices, `commit_loss` scalar (0 in eval)."""

    recon: Tensor
    codes: Tensor
    commit_loss: Tensor


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return layers


class VQVAE(nn.Module):
    """MLP encoder -> `VectorQuantize` (EMA codebook, one code per patch) -> MLP decoder.

    Input `x` [B, L, C] (L = `patch_len`, C = `channels`); the encoder flattens it to [B, L * C] and maps it to a
    latent [B, dim], the quantizer snaps the latent to the nearest of `codebook_size` codes, the decoder maps the
    code vector back to [B, L, C]. Codebook entries move by exponential moving average (`decay`) during training,
    codes used less than `dead_code_threshold` times (EMA count) are re-seeded from the batch, and with `kmeans_init`
    the codebook starts from k-means of the first batch.
    """

    def __init__(
        self,
        patch_len: int,
        channels: int,
        *,
        codebook_size: int = 64,
        dim: int = 32,
        hidden: int = 128,
        decay: float = 0.9,
        commitment_weight: float = 0.25,
        kmeans_init: bool = True,
        dead_code_threshold: float = 1.0,
    ) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.channels = channels
        self.codebook_size = codebook_size
        flat = patch_len * channels
        self.encoder = nn.Sequential(nn.Flatten(1), *_mlp([flat, hidden, hidden, dim]))
        self.quantizer = VectorQuantize(
            dim=dim,
            codebook_size=codebook_size,
            decay=decay,
            commitment_weight=commitment_weight,
            kmeans_init=kmeans_init,
            threshold_ema_dead_code=dead_code_threshold,
        )
        self.decoder = nn.Sequential(*_mlp([dim, hidden, hidden, flat]), nn.Unflatten(1, (patch_len, channels)))

    def forward(self, x: Tensor) -> VQOutput:
        """`x` [B, L, C] -> reconstruction [B, L, C], codes [B], commitment loss (scalar). Updates the EMA codebook
        when the module is in training mode."""
        quantized, codes, commit_loss = self.quantizer(self.encoder(x))
        return VQOutput(self.decoder(quantized), codes, commit_loss)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """`x` [B, L, C] -> codes [B] int64: index of the codebook entry nearest each latent (never updates it)."""
        return torch.cdist(self.encoder(x), self.quantizer.codebook).argmin(dim=-1)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """`codes` [B] int64 -> the decoded patches [B, L, C]."""
        return self.decoder(self.quantizer.get_output_from_indices(codes))
