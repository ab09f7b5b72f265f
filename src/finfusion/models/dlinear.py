"""DLinear (Zeng et al., AAAI 2023): moving-average decomposition and one linear map per component.

Shapes: B batch, L lookback, C input channels, T target channels, H horizon. Each channel's window is split into a
trend (centred moving average, edges padded by repeating the end values) and a remainder; a linear layer L -> H maps
each part to the horizon and the two forecasts add up. Weights are shared by all channels, or one set per channel
(`individual=True`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finfusion.models.base import Capabilities, target_positions
from finfusion.samples.contract import PAST, PAST_MASK


def moving_average(x: Tensor, kernel: int) -> Tensor:
    """x [B, C, L] -> centred moving average [B, C, L] with an odd `kernel`, edges replicate-padded."""
    half = (kernel - 1) // 2
    padded = F.pad(x, (half, half), mode="replicate")
    return F.avg_pool1d(padded, kernel_size=kernel, stride=1)


class DLinear(nn.Module, Capabilities):
    """DLinear forecaster: `past` [B, L, C] (+ `past_mask` [B, L]) -> `point` [B, H, T] for channels `target_index`.

    Unobserved bars (`past_mask` False) enter as 0. `kernel` is clipped to the largest odd number <= L.
    """

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"point"})
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        horizon: int,
        kernel: int = 25,
        individual: bool = False,
        target_index: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        targets = target_positions(target_index, n_channels)
        self.register_buffer("target_index", torch.tensor(targets, dtype=torch.long), persistent=False)
        kernel = min(kernel, context_length)
        self.kernel = kernel if kernel % 2 == 1 else kernel - 1
        self.horizon = horizon
        self.individual = individual
        groups = len(targets) if individual else 1
        bound = 1.0 / context_length
        self.trend_weight = nn.Parameter(torch.full((groups, horizon, context_length), bound))
        self.season_weight = nn.Parameter(torch.full((groups, horizon, context_length), bound))
        self.bias = nn.Parameter(torch.zeros(groups, horizon))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch `past` [B, L, C], optional `past_mask` [B, L] -> `point` [B, H, T]."""
        past = batch[PAST]
        mask = batch.get(PAST_MASK)
        if mask is not None:
            past = past.masked_fill(~mask.unsqueeze(-1), 0.0)
        x = past[..., self.target_index].transpose(1, 2)
        trend = moving_average(x, self.kernel)
        season = x - trend
        out = (
            torch.einsum("btl,thl->bth", trend, self.trend_weight.expand(x.shape[1], -1, -1))
            + torch.einsum("btl,thl->bth", season, self.season_weight.expand(x.shape[1], -1, -1))
            + self.bias
        )
        return {"point": out.transpose(1, 2)}
