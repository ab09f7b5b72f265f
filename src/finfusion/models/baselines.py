"""Closed-form baselines: random walk and drift. Not trained; `fit` is a no-op and `predict(batch)` forecasts.

Shapes: B batch, L lookback, C input channels, T target channels, H horizon.

`space` says what the target channels hold:

- `"return"` (the default; finfusion's default targets are per-bar log returns): each future value is one bar's
  change. The random walk forecasts a 0 return at every step (no cumulative change); drift forecasts the mean of
  the observed past returns at every step.
- `"level"` (prices or log prices): the random walk repeats the last observed value; drift adds h times the mean
  observed one-bar change to it at step h = 1..H.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from finfusion.models.base import Capabilities
from finfusion.samples.contract import PAST, PAST_MASK, SCALE_LOC, SCALE_SCALE

Space = Literal["level", "return"]


def _observed(batch: dict[str, Tensor], index: list[int]) -> tuple[Tensor, Tensor]:
    """-> values [B, L, T] of the target channels and mask [B, L, T] (observed and finite)."""
    past = batch[PAST][..., index]
    mask = torch.isfinite(past)
    if PAST_MASK in batch:
        mask = mask & batch[PAST_MASK].unsqueeze(-1)
    return past, mask


def last_observed(values: Tensor, mask: Tensor) -> Tensor:
    """values, mask [B, L, T] -> the last observed value per (sample, channel) [B, T] (NaN if none observed)."""
    length = values.shape[1]
    positions = torch.arange(length, device=values.device).view(1, -1, 1)
    last = torch.where(mask, positions, -1).amax(dim=1)
    picked = values.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)
    return torch.where(last >= 0, picked, torch.nan)


class _ClosedForm(Capabilities):
    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"point"})
    trainable: ClassVar[bool] = False

    def __init__(self, horizon: int, space: Space = "return", target_index: Sequence[int] | None = None) -> None:
        if space not in ("level", "return"):
            raise ValueError(f"space must be 'level' or 'return', got {space!r}")
        self.horizon = horizon
        self.space = space
        self.target_index = None if target_index is None else list(target_index)

    def fit(self, data: Any = None) -> _ClosedForm:
        """Nothing to fit; returns self."""
        return self

    def _targets(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        index = list(range(batch[PAST].shape[-1])) if self.target_index is None else self.target_index
        return _observed(batch, index)


class RandomWalk(_ClosedForm):
    """Random walk: `point` [B, H, T] = last observed level (`level`) or a return of 0 (`return`).

    Windows normalised by a fitted normaliser carry `scale_loc` / `scale_scale` [B, 1, T]: a raw return of 0 is then
    -loc / scale in the batch's units. (Drift and the level forecasts are affine in the values, so they need no
    correction.)"""

    def predict(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch `past` [B, L, C] (+ `past_mask` [B, L]) -> `point` [B, H, T]."""
        values, mask = self._targets(batch)
        if self.space == "return":
            base = torch.zeros(values.shape[0], values.shape[2], dtype=values.dtype, device=values.device)
            if SCALE_LOC in batch and SCALE_SCALE in batch:
                base = -batch[SCALE_LOC][:, 0].to(values.dtype) / batch[SCALE_SCALE][:, 0].to(values.dtype)
        else:
            base = last_observed(values, mask)
        return {"point": base.unsqueeze(1).expand(-1, self.horizon, -1).clone()}


class Drift(_ClosedForm):
    """Drift: the mean observed one-bar change, repeated (`return`) or accumulated from the last level (`level`)."""

    def predict(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch `past` [B, L, C] (+ `past_mask` [B, L]) -> `point` [B, H, T]."""
        values, mask = self._targets(batch)
        if self.space == "return":
            weight = mask.to(values.dtype)
            mean = torch.where(mask, values, 0.0).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
            return {"point": mean.unsqueeze(1).expand(-1, self.horizon, -1).clone()}
        both = mask[:, 1:] & mask[:, :-1]
        diffs = torch.where(both, values[:, 1:] - values[:, :-1], 0.0)
        steps = torch.arange(1, self.horizon + 1, dtype=values.dtype, device=values.device).view(1, -1, 1)
        slope = diffs.sum(dim=1) / both.to(values.dtype).sum(dim=1).clamp_min(1.0)
        return {"point": last_observed(values, mask).unsqueeze(1) + steps * slope.unsqueeze(1)}
