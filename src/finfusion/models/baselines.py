"""Closed-form baselines: random walk, drift and seasonal naive. Not trained; `fit` is a no-op and `predict(batch)`
forecasts.

Shapes: B batch, L lookback, C input channels, T target channels, H horizon, Q quantile levels.

`space` says what the target channels hold:

- `"return"` (the default; finfusion's default targets are per-bar log returns): each future value is one bar's
  change. The random walk forecasts a 0 return at every step (no cumulative change); drift forecasts the mean of
  the observed past returns at every step.
- `"level"` (prices or log prices): the random walk repeats the last observed value; drift adds h times the mean
  observed one-bar change to it at step h = 1..H.

Seasonal naive repeats the value `season` bars before each future step (the same formula in both spaces).

With `quantile_levels` each baseline is also a probabilistic forecast, so that a distribution metric (CRPS, MSIS)
compares a model with a baseline that has a distribution too: `quantiles` [B, H, T, Q] are the point forecast plus
the empirical quantiles of the window's own errors of that rule, computed from observed bars only (return space:
the random walk's are the past returns centred on their mean, drift's the past returns minus their mean around the
drift, seasonal naive's the differences r_t - r_{t - season}). Level-space quantiles are not defined here.
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


def _observed_mean(values: Tensor, mask: Tensor) -> Tensor:
    """values, mask [B, L, T] -> the mean of the observed values [B, 1, T] (0 if none)."""
    total = torch.where(mask, values, 0.0).sum(dim=1, keepdim=True)
    return total / mask.to(values.dtype).sum(dim=1, keepdim=True).clamp_min(1.0)


class _ClosedForm(Capabilities):
    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"point", "quantiles"})
    trainable: ClassVar[bool] = False

    def __init__(
        self,
        horizon: int,
        space: Space = "return",
        target_index: Sequence[int] | None = None,
        quantile_levels: Sequence[float] | None = None,
    ) -> None:
        if space not in ("level", "return"):
            raise ValueError(f"space must be 'level' or 'return', got {space!r}")
        if quantile_levels is not None and space != "return":
            raise ValueError("quantile forecasts of the baselines are defined for space 'return' only")
        if quantile_levels is not None and not all(0.0 < float(q) < 1.0 for q in quantile_levels):
            raise ValueError(f"quantile_levels must lie in (0, 1), got {list(quantile_levels)}")
        self.horizon = horizon
        self.space = space
        self.target_index = None if target_index is None else list(target_index)
        self.quantile_levels = None if quantile_levels is None else [float(q) for q in quantile_levels]

    def _with_quantiles(self, point: Tensor, errors: Tensor, seen: Tensor) -> dict[str, Tensor]:
        """{"point": point [B, H, T]} plus, with `quantile_levels`, `quantiles` [B, H, T, Q]: point + the empirical
        quantiles of `errors` [B, L', T] over the observed positions `seen` [B, L', T]."""
        if self.quantile_levels is None:
            return {"point": point}
        levels = torch.tensor(self.quantile_levels, dtype=errors.dtype, device=errors.device)
        spread = torch.nanquantile(torch.where(seen, errors, torch.nan), levels, dim=1)  # [Q, B, T]
        quantiles = point.unsqueeze(-1) + spread.permute(1, 2, 0).unsqueeze(1)
        return {"point": point, "quantiles": quantiles}

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
        point = base.unsqueeze(1).expand(-1, self.horizon, -1).clone()
        return self._with_quantiles(point, values - _observed_mean(values, mask), mask)


class Drift(_ClosedForm):
    """Drift: the mean observed one-bar change, repeated (`return`) or accumulated from the last level (`level`)."""

    def predict(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch `past` [B, L, C] (+ `past_mask` [B, L]) -> `point` [B, H, T]."""
        values, mask = self._targets(batch)
        if self.space == "return":
            mean = _observed_mean(values, mask)
            point = mean.expand(-1, self.horizon, -1).clone()
            return self._with_quantiles(point, values - mean, mask)
        both = mask[:, 1:] & mask[:, :-1]
        diffs = torch.where(both, values[:, 1:] - values[:, :-1], 0.0)
        steps = torch.arange(1, self.horizon + 1, dtype=values.dtype, device=values.device).view(1, -1, 1)
        slope = diffs.sum(dim=1) / both.to(values.dtype).sum(dim=1).clamp_min(1.0)
        return {"point": last_observed(values, mask).unsqueeze(1) + steps * slope.unsqueeze(1)}


class SeasonalNaive(_ClosedForm):
    """Seasonal naive: step h repeats the value `season` bars before it, i.e. past[L - season + (h - 1) mod season]
    (NaN where that bar was not observed)."""

    def __init__(
        self,
        horizon: int,
        season: int = 5,
        space: Space = "return",
        target_index: Sequence[int] | None = None,
        quantile_levels: Sequence[float] | None = None,
    ) -> None:
        super().__init__(horizon, space, target_index, quantile_levels)
        if season < 1:
            raise ValueError(f"season must be at least 1, got {season}")
        self.season = season

    def predict(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch `past` [B, L, C] (+ `past_mask` [B, L]) -> `point` [B, H, T] (+ `quantiles` [B, H, T, Q])."""
        values, mask = self._targets(batch)
        length = values.shape[1]
        if length < self.season:
            raise ValueError(f"seasonal naive needs a lookback of at least season {self.season}, got {length}")
        steps = length - self.season + torch.arange(self.horizon, device=values.device) % self.season
        point = torch.where(mask[:, steps], values[:, steps], torch.nan)
        errors = values[:, self.season :] - values[:, : -self.season]
        return self._with_quantiles(point, errors, mask[:, self.season :] & mask[:, : -self.season])
