"""Linear maps with one weight per patch size (Moirai's multi patch-size projections).

Every token carries its patch size p; the input projection reads its first p values of a [..., P_max] patch, the output
projection writes `dim` parameters for each of its first p positions. Weights of all sizes are stored in one tensor,
padded to the largest size, in the layout of the published checkpoints: the input weight [S, D, P_max] and bias
[S, D]; the output weight [S, dim * P_max, D] and bias [S, dim * P_max], where rows are ordered (parameter, position)
so that the flat output of a token reshapes to [dim, P_max] (for a size p < P_max only its first dim * p rows are
used, as the published weights were trained).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _size_mask(sizes: Sequence[int], width: int) -> Tensor:
    """[S, width] bool: True on the first sizes[s] positions of row s."""
    return torch.arange(width)[None, :] < torch.tensor(list(sizes))[:, None]


def _uniform(tensor: Tensor, fan_in: int) -> None:
    """nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    nn.init.uniform_(tensor, -bound, bound)


def _by_size(x: Tensor, patch_size: Tensor, sizes: tuple[int, ...], weight: Tensor, bias: Tensor) -> Tensor:
    """x [..., I] through weight[s] [O, I] + bias[s] [O] where patch_size [...] is sizes[s] -> [..., O] (zero for
    a size not in `sizes`)."""
    out = x.new_zeros(*x.shape[:-1], weight.shape[1])
    for s, size in enumerate(sizes):
        chosen = patch_size == size
        if bool(chosen.any()):
            out = out + chosen.unsqueeze(-1) * (x @ weight[s].T + bias[s])
    return out


class MultiSizeInput(nn.Module):
    """Patches x [..., P_max] of sizes `patch_size` [...] -> representations [..., D]."""

    def __init__(self, patch_sizes: Sequence[int], d_model: int) -> None:
        super().__init__()
        self.patch_sizes = tuple(int(p) for p in patch_sizes)
        width = max(self.patch_sizes)
        self.weight = nn.Parameter(torch.empty(len(self.patch_sizes), d_model, width))
        self.bias = nn.Parameter(torch.empty(len(self.patch_sizes), d_model))
        self.register_buffer("mask", _size_mask(self.patch_sizes, width)[:, None, :], persistent=False)
        with torch.no_grad():
            self.weight.zero_()
            for s, size in enumerate(self.patch_sizes):
                _uniform(self.weight[s, :, :size], size)
                _uniform(self.bias[s], size)

    def forward(self, x: Tensor, patch_size: Tensor) -> Tensor:
        return _by_size(x, patch_size, self.patch_sizes, self.weight * self.mask, self.bias)


class MultiSizeOutput(nn.Module):
    """Representations x [..., D] of tokens of sizes `patch_size` [...] -> parameters [..., P_max, dim]."""

    def __init__(self, d_model: int, patch_sizes: Sequence[int], dim: int) -> None:
        super().__init__()
        self.patch_sizes = tuple(int(p) for p in patch_sizes)
        self.dim = dim
        self.width = max(self.patch_sizes)
        rows = dim * self.width
        self.weight = nn.Parameter(torch.empty(len(self.patch_sizes), rows, d_model))
        self.bias = nn.Parameter(torch.empty(len(self.patch_sizes), rows))
        self.register_buffer(
            "mask", _size_mask([dim * p for p in self.patch_sizes], rows)[:, :, None], persistent=False
        )
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()
            for s, size in enumerate(self.patch_sizes):
                _uniform(self.weight[s, : dim * size], d_model)
                _uniform(self.bias[s, : dim * size], d_model)

    def forward(self, x: Tensor, patch_size: Tensor, width: int | None = None) -> Tensor:
        """-> [..., P_max, dim]; with `width` (every token's patch size) only its first `width` positions,
        [..., width, dim], computed from those rows alone."""
        if width is not None:
            s = self.patch_sizes.index(width)
            starts = torch.arange(self.dim, device=x.device)[:, None] * self.width
            rows = (starts + torch.arange(width, device=x.device)).flatten()
            out = x @ (self.weight[s] * self.mask[s])[rows].T + self.bias[s][rows]
            return out.unflatten(-1, (self.dim, width)).transpose(-1, -2)
        out = _by_size(x, patch_size, self.patch_sizes, self.weight * self.mask, self.bias)
        return out.unflatten(-1, (self.dim, self.width)).transpose(-1, -2)
