"""Moirai sizes, the patch size for a bar frequency, and the token budget.

Sizes (Woo et al. 2024, table of model variants; heads = width / 64): `small` 6 layers x 384 (14M weights), `base`
12 x 768 (91M), `large` 24 x 1,024 (311M); `tiny` (2 x 64) is ours, for CPU tests. All share the published patch
sizes 8, 16, 32, 64, 128 and 512 time positions, so a preset's weights and a published checkpoint have one layout.

Patch size from the frequency (the paper's guidance; seed 003: 32 or 64 for hourly bars): minute bars 32 (of 32, 64,
128), hourly 32 (of 32, 64), daily 16 (of 16, 32); the smallest recommended size the model has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from finfusion.errors import FinfusionError

PATCH_SIZES = (8, 16, 32, 64, 128)
MAX_SEQ_LEN = 512


@dataclass(frozen=True)
class MoiraiSize:
    d_model: int
    num_layers: int
    patch_sizes: tuple[int, ...] = PATCH_SIZES
    max_seq_len: int = MAX_SEQ_LEN


PRESETS = {
    "tiny": MoiraiSize(64, 2),
    "small": MoiraiSize(384, 6),
    "base": MoiraiSize(768, 12),
    "large": MoiraiSize(1024, 24),
}

#: Recommended patch sizes per kind of frequency, smallest first.
RECOMMENDED = {"minute": (32, 64, 128), "hourly": (32, 64), "daily": (16, 32)}


def preset(name: str) -> MoiraiSize:
    if name not in PRESETS:
        raise FinfusionError(f"unknown Moirai preset '{name}'; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def frequency_kind(freq: str) -> str:
    from finfusion.data.calendar import parse_freq

    minutes = parse_freq(freq).minutes
    if minutes is None:
        return "daily"
    return "hourly" if minutes % 60 == 0 else "minute"


def patch_size_for(freq: str, available: tuple[int, ...]) -> int:
    """The smallest recommended patch size for bars of `freq` among the model's `available` sizes."""
    kind = frequency_kind(freq)
    for size in RECOMMENDED[kind]:
        if size in available:
            return size
    raise FinfusionError(
        f"no recommended patch size for {freq} bars ({', '.join(map(str, RECOMMENDED[kind]))}) among the model's "
        f"patch sizes {', '.join(map(str, available))}; set model.patch_size"
    )


def tokens_per_sample(targets: int, covariates: int, context: int, horizon: int, patch: int) -> int:
    """Tokens of one sample: each target spans context + horizon, each covariate the context only."""
    context_tokens, horizon_tokens = math.ceil(context / patch), math.ceil(horizon / patch)
    return targets * (context_tokens + horizon_tokens) + covariates * context_tokens


def check_token_budget(targets: int, covariates: int, context: int, horizon: int, patch: int, budget: int) -> int:
    """The tokens of one sample; raises FinfusionError naming the numbers when they exceed `budget` (before any
    tensor is allocated)."""
    tokens = tokens_per_sample(targets, covariates, context, horizon, patch)
    if tokens > budget:
        variates = targets + covariates
        raise FinfusionError(
            f"Moirai token budget exceeded: {variates} variates ({targets} targets x ceil(({context} + {horizon}) / "
            f"{patch}) + {covariates} covariates x ceil({context} / {patch})) = {tokens} tokens per sample > budget "
            f"{budget}; use a larger patch size, a shorter context or fewer covariates"
        )
    return tokens
