"""AdamW with decay-free norms and biases, and a linear warm-up + cosine decay learning-rate schedule by step."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def warmup_cosine_factor(step: int, total_steps: int, warmup_fraction: float, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimiser `step` (0-based): linear rise to 1 over the warm-up, cosine to `min_ratio`.

    The warm-up lasts `round(warmup_fraction * total_steps)` steps, rising as (step + 1) / warmup so the first step
    already learns; afterwards the factor follows min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2.
    """
    warmup = round(warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float, min_ratio: float = 0.0
) -> LambdaLR:
    """A `LambdaLR` stepping `warmup_cosine_factor` once per optimiser step."""
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup_fraction, min_ratio))


def _no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that get no weight decay: biases, norm-layer parameters and any other 0-D/1-D tensor."""
    names = {name for name, param in model.named_parameters() if param.ndim < 2}
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES):
            names.update(f"{module_name}.{name}" if module_name else name for name, _ in module.named_parameters())
    return names


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, extra_groups: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay / no-decay, and the same split for each extra group.

    Each extra group is a mapping with `prefix` (a sub-module name, e.g. "text_encoder") and optionally `lr` and
    `weight_decay`; its parameters leave the default groups. Frozen parameters are left out. Empty groups are dropped.
    """
    no_decay = _no_decay_names(model)
    specs = [dict(spec) for spec in extra_groups or ()]
    buckets: list[tuple[dict[str, Any], list[nn.Parameter], list[nn.Parameter]]] = [
        ({"lr": spec.get("lr", lr), "weight_decay": spec.get("weight_decay", weight_decay)}, [], []) for spec in specs
    ]
    default: tuple[dict[str, Any], list[nn.Parameter], list[nn.Parameter]] = (
        {"lr": lr, "weight_decay": weight_decay},
        [],
        [],
    )
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        owner = next(
            (
                buckets[i]
                for i, spec in enumerate(specs)
                if name == spec["prefix"] or name.startswith(spec["prefix"] + ".")
            ),
            default,
        )
        (owner[2] if name in no_decay else owner[1]).append(param)
    groups = []
    for options, decay, plain in [default, *buckets]:
        if decay:
            groups.append({**options, "params": decay})
        if plain:
            groups.append({**options, "params": plain, "weight_decay": 0.0})
    return groups


def configure_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    warmup_fraction: float,
    total_steps: int,
    extra_groups: Sequence[Mapping[str, Any]] | None = None,
    min_ratio: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> dict[str, Any]:
    """AdamW + warm-up/cosine by step, in the form Lightning's `configure_optimizers` returns."""
    optimizer = torch.optim.AdamW(param_groups(model, lr, weight_decay, extra_groups), lr=lr, betas=betas)
    scheduler = warmup_cosine_schedule(optimizer, total_steps, warmup_fraction, min_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
