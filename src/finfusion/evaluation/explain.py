"""Why a model decided what it did: attributions of a deterministic scalar per sample (the family's explained
output: `Capabilities.explained_output` for a forecaster, a class probability, a portfolio weight) to its inputs.

- `integrated_gradients`: captum's Integrated Gradients over the float inputs of a batch (e.g. `past` [B, L, C] per
  time step and channel, `text_emb` [B, N, D] per text), from a baseline of zeros (the training mean of normalised
  inputs; an all-zero text vector). Completeness: the attributions of a sample sum to its output minus the
  baseline's output, up to the integral's discretisation (`delta`).
- `text_occlusion`: per text slot (a mask [B, *S] of any shape: [B, N] texts, [B, L, N] tweets per lag day), the
  output minus the output with that text removed (its mask off): which news item moved this decision, and how much,
  without a baseline to choose.
- `permutation_importance`: per feature group (channels of `past`, or the texts), the rise of a loss over the
  span's samples (e.g. the squared error of the output against the realised value) when the group's values are
  shuffled across those samples.

Uses captum for the gradients; occlusion and permutation are a few lines over the model's own batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from finfusion.errors import FinfusionError

Batch = dict[str, Tensor]
Output = Callable[[Batch], Tensor]
#: Samples of a span that permutation importance scores (its most recent ones).
PERMUTATION_SAMPLES = 512


@dataclass(frozen=True)
class Attributions:
    """Integrated Gradients of `keys`: `values[key]` shaped like the input; `output` [B] and `baseline_output` [B]
    the explained output at the input and at the baseline; `delta` [B] the completeness gap
    (sum of attributions - (output - baseline_output))."""

    values: dict[str, Tensor]
    output: Tensor
    baseline_output: Tensor
    delta: Tensor

    def total(self, key: str) -> Tensor:
        """[B]: the attributions of `key` summed over everything but the batch axis."""
        return self.values[key].flatten(1).sum(dim=1)


def integrated_gradients(
    output: Output, batch: Batch, keys: Sequence[str], steps: int = 64, baselines: Mapping[str, Tensor] | None = None
) -> Attributions:
    """IG of `output(batch)` [B] with respect to the float tensors `batch[key]` (see the module docstring)."""
    from captum.attr import IntegratedGradients

    missing = [key for key in keys if key not in batch]
    if missing:
        raise FinfusionError(f"cannot attribute to {', '.join(missing)}: the batch has {', '.join(sorted(batch))}")
    inputs = tuple(batch[key].detach().float() for key in keys)
    given = baselines or {}
    bases = tuple(given.get(key, torch.zeros_like(value)) for key, value in zip(keys, inputs, strict=True))
    size = inputs[0].shape[0]
    # the rest of the batch (masks, ids) travels as captum's additional arguments, repeated with the scaled inputs
    riders = [key for key, value in batch.items() if key not in keys and torch.is_tensor(value) and len(value) == size]

    def forward(*values: Tensor) -> Tensor:
        named = dict(zip([*keys, *riders], values, strict=True))
        return output({**batch, **named})

    extra = tuple(batch[key] for key in riders)
    explainer = IntegratedGradients(forward)
    attributions, delta = explainer.attribute(
        inputs,
        baselines=bases,
        additional_forward_args=extra or None,
        n_steps=steps,
        method="gausslegendre",
        return_convergence_delta=True,
    )
    with torch.no_grad():
        at_input = forward(*inputs, *extra)
        at_baseline = forward(*bases, *extra)
    values = {key: value.detach() for key, value in zip(keys, attributions, strict=True)}
    return Attributions(values, at_input.detach(), at_baseline.detach(), delta.detach())


@torch.no_grad()
def text_occlusion(output: Output, batch: Batch, mask_key: str = "text_mask") -> Tensor:
    """[B, *S] shaped like the mask `batch[mask_key]` [B, *S]: output with every text minus output without the text
    of that slot (0 where the slot is empty)."""
    if mask_key not in batch:
        raise FinfusionError(f"the batch has no {mask_key}: the model reads no texts")
    mask = batch[mask_key].bool()
    flat = mask.reshape(mask.shape[0], -1)  # [B, prod(S)]
    full = output(batch)
    effects = torch.zeros(flat.shape, dtype=full.dtype)
    for slot in range(flat.shape[1]):
        present = flat[:, slot]
        if not present.any():
            continue
        without = flat.clone()
        without[:, slot] = False
        effects[:, slot] = torch.where(present, full - output({**batch, mask_key: without.view(mask.shape)}), 0.0)
    return effects.view(mask.shape)


@dataclass(frozen=True)
class Group:
    """A feature group: `key` of the batch and, for `past`-like inputs [B, ..., C], the channel positions (None: the
    whole input, e.g. every text of a sample, shuffled together with the inputs `with_keys` that describe the same
    texts: their mask, their ages)."""

    name: str
    key: str
    channels: tuple[int, ...] | None = None
    with_keys: tuple[str, ...] = ()


@torch.no_grad()
def permutation_importance(
    loss: Callable[[Batch], Tensor], batch: Batch, groups: Sequence[Group], repeats: int = 5, seed: int = 0
) -> dict[str, float]:
    """Per group, the mean rise of `loss(batch)` [] over the B samples of `batch` when the group's values are
    shuffled across them (`repeats` shuffles, seeded)."""
    base = float(loss(batch))
    generator = torch.Generator().manual_seed(seed)
    rises: dict[str, float] = {}
    for group in groups:
        scores = []
        for _ in range(repeats):
            order = torch.randperm(batch[group.key].shape[0], generator=generator)
            shuffled = dict(batch)
            if group.channels is None:
                for key in (group.key, *group.with_keys):
                    shuffled[key] = batch[key][order]
            else:
                values = batch[group.key].clone()
                channels = list(group.channels)
                values[..., channels] = batch[group.key][order][..., channels]
                shuffled[group.key] = values
            scores.append(float(loss(shuffled)) - base)
        rises[group.name] = float(np.mean(scores))
    return rises
