"""TimesNet (Wu et al., ICLR 2023), compact: FFT period discovery and a 2-D inception convolution per period.

Shapes: N series, L time steps, C input channels, D model width, k periods.

A `TimesBlock` finds the k dominant periods of a series from the amplitudes of its FFT over time (averaged over the
channels, the constant term left out): period p = L // f for each of the k strongest frequencies f. For each, the
series is zero-padded to a multiple of p and folded into a 2-D grid [L/p rows of p steps], so that a 2-D convolution
sees both the variation inside a period (along a row) and between periods (down a column). An inception block (the
mean of 2-D convolutions with kernels 1, 3, 5, ...), a GELU and a second inception block process the grid, which is
unfolded back to L steps. The k results are summed with the softmax of their amplitudes as weights, plus the input.

Unlike the reference code, which picks one set of periods from amplitudes averaged over the whole batch, periods are
chosen per series here, so a series' output never depends on the other series in its batch.

The choice of periods is a step: the output jumps where two frequencies swap ranks. `TimesNetEncoder.held_periods`
holds the choice made for given series, so that attributions along a path to them (Integrated Gradients) see a
smooth function that equals the encoder at those series.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def spectrum(x: Tensor) -> Tensor:
    """x [N, L, C] -> amplitudes [N, L // 2] of the frequencies 1 .. L // 2: |rfft(x)[f]| averaged over the C
    channels."""
    return torch.fft.rfft(x, dim=1).abs().mean(dim=-1)[:, 1:]


def dominant_frequencies(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """x [N, L, C] -> (positions [N, k] int64 in `spectrum` (frequency position + 1), amplitudes [N, k]) of the k
    strongest non-constant frequencies."""
    length = x.shape[1]
    if not 1 <= k <= length // 2:
        raise ValueError(f"cannot find {k} periods in {length} steps (at most {length // 2})")
    values, index = torch.topk(spectrum(x), k, dim=-1)
    return index, values


def dominant_periods(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """x [N, L, C] -> (periods [N, k] int64, amplitudes [N, k]) of the k strongest non-constant frequencies; period =
    L // f (at least 1)."""
    index, values = dominant_frequencies(x, k)
    return torch.div(x.shape[1], index + 1, rounding_mode="floor"), values


class InceptionBlock(nn.Module):
    """Mean of 2-D convolutions with kernels 1, 3, ..., 2 * n_kernels - 1 ("same" padding): [N, C_in, R, P] ->
    [N, C_out, R, P]."""

    def __init__(self, in_channels: int, out_channels: int, n_kernels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, kernel_size=2 * i + 1, padding=i) for i in range(n_kernels)
        )
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([conv(x) for conv in self.convs], dim=-1).mean(dim=-1)


class TimesBlock(nn.Module):
    """One TimesNet block on x [N, L, D] -> [N, L, D] (see the module docstring)."""

    def __init__(self, d_model: int, d_ff: int, k: int, n_kernels: int) -> None:
        super().__init__()
        self.k = k
        self.conv = nn.Sequential(
            InceptionBlock(d_model, d_ff, n_kernels), nn.GELU(), InceptionBlock(d_ff, d_model, n_kernels)
        )
        #: Frequency positions [N0, k] held by `TimesNetEncoder.held_periods` (None: each input's dominant ones).
        self.held: Tensor | None = None
        self.recording = False

    def frequencies(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, L, D] -> the positions [N, k] of the frequencies used and their amplitudes [N, k]: the dominant
        ones, or the held ones (N a multiple of the N0 held series: a batch repeating them, tiled)."""
        if self.held is None:
            index, values = dominant_frequencies(x, self.k)
            if self.recording:
                self.held = index
            return index, values
        repeats, rest = divmod(x.shape[0], self.held.shape[0])
        if rest:
            raise ValueError(f"{x.shape[0]} series do not repeat the {self.held.shape[0]} whose periods are held")
        index = self.held.repeat(repeats, 1)
        return index, spectrum(x).gather(-1, index)

    def forward(self, x: Tensor) -> Tensor:
        n, length, width = x.shape
        index, amplitudes = self.frequencies(x)
        periods = torch.div(length, index + 1, rounding_mode="floor")
        per_period = x.new_zeros(n, self.k, length, width)
        for period in periods.unique().tolist():
            rows, slots = (periods == period).nonzero(as_tuple=True)
            padded = -(-length // period) * period
            grid = F.pad(x[rows], (0, 0, 0, padded - length)).view(len(rows), padded // period, period, width)
            out = self.conv(grid.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(len(rows), padded, width)
            per_period = per_period.index_put((rows, slots), out[:, :length])
        weights = torch.softmax(amplitudes, dim=-1)  # [N, k]
        return x + torch.einsum("nkld,nk->nld", per_period, weights)


class TimesNetEncoder(nn.Module):
    """Per-series TimesNet: inputs [N, L, C] (+ mask [N, L], True = observed) -> hidden states [N, L, D].

    A linear embedding of the C channels plus a learned position embedding, then `n_layers` TimesBlocks, each followed
    by one shared LayerNorm (as in the reference model). Unobserved steps enter and leave as zeros.
    """

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        d_model: int = 32,
        d_ff: int = 32,
        n_layers: int = 1,
        top_k: int = 2,
        n_kernels: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(n_channels, d_model)
        self.position = nn.Parameter(torch.randn(context_length, d_model) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TimesBlock(d_model, d_ff, top_k, n_kernels) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    @contextmanager
    def held_periods(self, x: Tensor, mask: Tensor | None = None) -> Iterator[None]:
        """Within: every block uses the frequencies it picks for the series x [N0, L, C] (mask [N0, L]), for those
        series and for batches that repeat them (the steps of an attribution path, tiled)."""
        blocks = [block for block in self.blocks if isinstance(block, TimesBlock)]
        try:
            for block in blocks:
                block.recording = True
            with torch.no_grad():
                self(x, mask)
            for block in blocks:
                block.recording = False
            yield
        finally:
            for block in blocks:
                block.held, block.recording = None, False

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [N, L, C], mask [N, L] -> [N, L, D]."""
        keep = None if mask is None else mask.unsqueeze(-1).to(x.dtype)
        h = self.embed(x if keep is None else x * keep) + self.position
        h = self.dropout(h)
        for block in self.blocks:
            h = self.norm(block(h))
        return h if keep is None else h * keep
