"""Forecast windows as Moirai tokens, and sequence packing.

Shapes: B samples, L context bars, H horizon, C input channels of which T are targets (`target_index`), p the patch
size, P = P_max the model's largest patch size, Nc = ceil(L / p) context patches, Nh = ceil(H / p) horizon patches,
N = T (Nc + Nh) + (C - T) Nc tokens per sample.

Per sample, each target variate is Nc context patches then Nh patches to forecast (`prediction_mask`); each other
channel is a past-only covariate of Nc context patches. The context is left-padded to Nc p bars and the horizon
right-padded to Nh p; leading patches with no bar at all are padding (sample_id 0), other missing bars are
unobserved values, as are values that are not finite (a covariate's warm-up). Time ids count the patches from the
first one with a bar; the horizon's continue them. Variate ids: the targets 0..T-1, then the covariates.

Packing puts several samples' non-padding tokens into one row (first fit, longest first), each with its own
sample id, so that short samples (early windows, few variates) waste no compute; attention and the scaler never mix
samples, and the loss is per (sample, variate), so packing changes nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Tokens:
    """Model inputs [B, N, P] (`target`, `observed`) and [B, N] (the rest)."""

    target: Tensor
    observed: Tensor
    sample_id: Tensor
    time_id: Tensor
    variate_id: Tensor
    prediction_mask: Tensor
    patch_size: Tensor

    def as_arguments(self) -> tuple[Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


def _patches(values: Tensor, observed: Tensor, patch: int, width: int, left: bool) -> tuple[Tensor, Tensor]:
    """values / observed [B, X, V] -> [B, V, ceil(X / p), width]: padded to whole patches (on the left or right) and
    each patch to `width` values."""
    pad = -values.shape[1] % patch
    side = (pad, 0) if left else (0, pad)
    values = F.pad(values.transpose(1, 2), side)
    observed = F.pad(observed.transpose(1, 2), side, value=False)
    values = values.unflatten(-1, (-1, patch))
    observed = observed.unflatten(-1, (-1, patch))
    return F.pad(values, (0, width - patch)), F.pad(observed, (0, width - patch), value=False)


def window_tokens(
    past: Tensor,
    past_mask: Tensor,
    target_index: Sequence[int],
    horizon: int,
    patch: int,
    width: int,
    future: Tensor | None = None,
    future_mask: Tensor | None = None,
) -> Tokens:
    """Windows -> tokens: past [B, L, C], past_mask [B, L]; future [B, H, T] and future_mask [B, H] when training
    (without them the forecast patches hold zeros, which the model never reads)."""
    batch, _, channels = past.shape
    targets = list(target_index)
    covariates = [c for c in range(channels) if c not in targets]
    seen = past_mask.bool()[..., None] & torch.isfinite(past)  # a missing value (e.g. in a warm-up) is unobserved
    values = torch.where(seen, past, torch.zeros_like(past))
    context, context_seen = _patches(values, seen, patch, width, left=True)  # [B, C, Nc, P]
    n_context = context.shape[2]
    any_bar = context_seen.any(-1)  # [B, C, Nc]
    started = any_bar.any(1).cumsum(-1) > 0  # [B, Nc]: at or after the first patch with a bar
    context_time = (any_bar.any(1).cumsum(-1) - 1).clamp_min(0)  # [B, Nc]
    n_horizon = math.ceil(horizon / patch)
    if future is None:
        future = past.new_zeros(batch, horizon, len(targets))
        future_mask = torch.zeros(batch, horizon, dtype=torch.bool, device=past.device)
    elif future_mask is None:
        future_mask = torch.ones(batch, horizon, dtype=torch.bool, device=past.device)
    ahead_seen = future_mask.bool()[..., None] & torch.isfinite(future)
    ahead, ahead_seen = _patches(torch.where(ahead_seen, future, 0.0), ahead_seen, patch, width, left=False)
    ahead_time = context_time.max(-1, keepdim=True).values + 1 + torch.arange(n_horizon, device=past.device)

    def flat(x: Tensor) -> Tensor:
        return x.flatten(1, 2)

    target_values = torch.cat([context[:, targets], ahead], dim=2)  # [B, T, Nc + Nh, P]
    target_seen = torch.cat([context_seen[:, targets], ahead_seen], dim=2)
    per_target = n_context + n_horizon
    long = torch.long
    parts = {
        "target": [flat(target_values)],
        "observed": [flat(target_seen)],
        "sample_id": [torch.cat([started, torch.ones_like(ahead_time, dtype=torch.bool)], -1).repeat(1, len(targets))],
        "time_id": [torch.cat([context_time, ahead_time], -1).repeat(1, len(targets))],
        "variate_id": [torch.arange(len(targets), device=past.device).repeat_interleave(per_target).expand(batch, -1)],
        "prediction_mask": [
            torch.cat([torch.zeros_like(started), torch.ones_like(ahead_time, dtype=torch.bool)], -1).repeat(
                1, len(targets)
            )
        ],
    }
    if covariates:
        parts["target"].append(flat(context[:, covariates]))
        parts["observed"].append(flat(context_seen[:, covariates]))
        parts["sample_id"].append(started.repeat(1, len(covariates)))
        parts["time_id"].append(context_time.repeat(1, len(covariates)))
        ids = torch.arange(len(targets), channels, device=past.device).repeat_interleave(n_context)
        parts["variate_id"].append(ids.expand(batch, -1))
        parts["prediction_mask"].append(torch.zeros_like(started).repeat(1, len(covariates)))
    joined = {key: torch.cat(value, dim=1) for key, value in parts.items()}
    return Tokens(
        target=joined["target"],
        observed=joined["observed"],
        sample_id=joined["sample_id"].to(long),
        time_id=joined["time_id"].to(long),
        variate_id=joined["variate_id"].to(long),
        prediction_mask=joined["prediction_mask"],
        patch_size=torch.full_like(joined["time_id"], patch, dtype=long),
    )


def pack(tokens: Tokens, row_tokens: int) -> Tokens:
    """The samples' non-padding tokens packed into rows of at most `row_tokens` (first fit, longest first), each
    sample numbered 1.. within its row; padding fills the rows' ends (sample_id 0)."""
    keep = tokens.sample_id > 0
    lengths = keep.sum(-1).tolist()
    if max(lengths, default=0) > row_tokens:
        raise ValueError(f"a sample has {max(lengths)} tokens, more than a row's {row_tokens}")
    rows: list[list[int]] = []
    room: list[int] = []
    for sample in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[sample]), None)
        if row is None:
            rows.append([])
            room.append(row_tokens)
            row = len(rows) - 1
        rows[row].append(sample)
        room[row] -= lengths[sample]
    out = {f.name: [] for f in fields(tokens)}
    for members in rows:
        pieces = {name: [] for name in out}
        for number, sample in enumerate(members, start=1):
            mine = keep[sample]
            for name in out:
                piece = getattr(tokens, name)[sample][mine]
                pieces[name].append(torch.full_like(piece, number) if name == "sample_id" else piece)
        for name, chunks in pieces.items():
            row = torch.cat(chunks, dim=0)
            missing = row_tokens - row.shape[0]
            out[name].append(F.pad(row, (0, 0) * (row.dim() - 1) + (0, missing)))
    return Tokens(**{name: torch.stack(values) for name, values in out.items()})
