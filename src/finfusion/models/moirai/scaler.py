"""Instance normalisation of packed tokens: each (sample, variate) series is standardised by the mean and standard
deviation of its own observed context values; the statistics are returned per token so that forecasts are put back
into the series' units.

Written by hand because the statistics are grouped by (sample_id, variate_id) inside a packed row, which no library
normaliser does. Computed in float64 (sums of long contexts), unbiased variance (n - 1; a group of one value has
variance 0), plus `minimum_scale` under the square root; padding tokens (sample_id 0) get loc 0 and scale 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

MINIMUM_SCALE = 1e-5


def group_index(sample_id: Tensor, variate_id: Tensor) -> tuple[Tensor, int]:
    """A dense id [B, N] of each token's (sample, variate) group within its row, and the number of ids G per row."""
    width = int(variate_id.max()) + 1 if variate_id.numel() else 1
    flat = sample_id.long() * width + variate_id.long()
    return flat, int(flat.max()) + 1 if flat.numel() else 1


def group_sums(values: Tensor, groups: Tensor, count: int) -> Tensor:
    """values [B, N] summed per group [B, N] -> [B, G]."""
    out = values.new_zeros(values.shape[0], count)
    return out.scatter_add_(1, groups, values)


def packed_std_scale(target: Tensor, observed: Tensor, sample_id: Tensor, variate_id: Tensor) -> tuple[Tensor, Tensor]:
    """target [B, N, P], observed [B, N, P] (values the statistics may use) -> loc [B, N, 1], scale [B, N, 1]."""
    groups, count = group_index(sample_id, variate_id)
    x = target.double()
    weight = observed.double()
    n = group_sums(weight.sum(-1), groups, count)
    total = group_sums((x * weight).sum(-1), groups, count)
    loc = total / torch.where(n == 0, 1.0, n)
    token_loc = loc.gather(1, groups)  # [B, N]
    squares = group_sums((((x - token_loc[..., None]) ** 2) * weight).sum(-1), groups, count)
    dof = n - 1
    var = squares / torch.where(dof == 0, 1.0, dof)
    scale = torch.sqrt(var + MINIMUM_SCALE).gather(1, groups)
    padding = sample_id == 0
    token_loc = token_loc.masked_fill(padding, 0.0)
    scale = scale.masked_fill(padding, 1.0)
    return token_loc.float()[..., None], scale.float()[..., None]
