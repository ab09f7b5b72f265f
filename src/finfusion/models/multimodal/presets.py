"""Sizes of the multimodal diffusion forecaster: typed configs per component and the `tiny` / `full` presets.

`tiny` trains in minutes on a laptop CPU (precomputed text embeddings, no MiniLM in the loop). `full` follows seed
000's parameter table: PatchTST encoder ~25M (8 layers, 128 wide, 8 heads), MiniLM-L6 with rank-8 LoRA on the
query/value projections, Q-Former ~35M (12 layers, 256 wide, 8 queries), diffusion decoder ~120M (12 layers, experts
256 -> 1024 -> 256). The table's widths and depths cannot reach its counts with the usual 4x feed-forward (8 layers at
width 128 hold 1.6M, 12 Q-Former layers at width 256 hold 12.6M), so the feed-forward widths are set to meet the
counts (12,288 and 4,608) while the widths that the modules exchange stay as the table gives them; the decoder
(16 experts per layer) holds ~112M. MiniLM-L6 itself has 22.7M weights (the table's ~80M overstates it) and rank-8
adapters on query/value add 74k, so the full model totals ~198M rather than the table's ~260M.

Overrides are plain mappings per component (e.g. {"decoder": {"n_experts": 4}}), as a YAML config gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from finfusion.errors import FinfusionError


@dataclass(frozen=True)
class TSEncoderConfig:
    """PatchTST encoder: patches of `patch_len` bars every `stride` bars; Transformer sizes."""

    patch_len: int = 6
    stride: int = 3
    d_model: int = 128
    n_heads: int = 8
    n_layers: int = 8
    d_ff: int = 512
    dropout: float = 0.1


@dataclass(frozen=True)
class TextEncoderConfig:
    """Text side. `backbone` None: only precomputed `text_emb` [B, N, embedding_dim]; else MiniLM (+ LoRA) from the
    installed all-MiniLM-L6-v2 ("all-MiniLM-L6-v2") or a local model folder, which also accepts `text_ids`.
    `load_weights` False builds the backbone from its config only (for restoring a checkpoint or counting)."""

    backbone: str | None = None
    embedding_dim: int = 384
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")
    load_weights: bool = True


@dataclass(frozen=True)
class QFormerConfig:
    """Cross-modal Q-Former: `n_queries` learned queries of width `d_model`."""

    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 12
    d_ff: int = 1024
    n_queries: int = 8
    dropout: float = 0.1


@dataclass(frozen=True)
class DecoderConfig:
    """Denoiser (sparse-MoE Transformer) and the teacher-forced reconstruction head (`recon_layers` at Q-Former
    width)."""

    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 12
    expert_hidden: int = 1024
    n_experts: int = 16
    top_k: int = 2
    dropout: float = 0.1
    recon_layers: int = 2


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule (a diffusers `beta_schedule`), the classifier-free-guidance condition dropout, and whether the
    chain diffuses the residual around a conditional mean path (`residual_of_mean`, see the forecaster)."""

    train_timesteps: int = 1000
    beta_schedule: str = "linear"
    cond_dropout: float = 0.1
    residual_of_mean: bool = True


@dataclass(frozen=True)
class LossConfig:
    """Weights of the auxiliary losses added to the diffusion MSE, and the InfoNCE projection."""

    infonce: float = 0.1
    reconstruction: float = 0.5
    mean: float = 1.0
    load_balance: float = 0.01
    contrastive_dim: int = 128
    temperature: float = 0.07


@dataclass(frozen=True)
class SamplingConfig:
    """Defaults of `forward` (prediction): paths per sample, steps, guidance scale, sampler."""

    num_samples: int = 32
    steps: int = 50
    guidance_scale: float = 1.0
    sampler: str = "ddim"


@dataclass(frozen=True)
class ForecasterConfig:
    """Every component's config."""

    ts_encoder: TSEncoderConfig = field(default_factory=TSEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


PRESETS: dict[str, ForecasterConfig] = {
    "tiny": ForecasterConfig(
        ts_encoder=TSEncoderConfig(patch_len=8, stride=4, d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0),
        qformer=QFormerConfig(d_model=64, n_heads=4, n_layers=2, d_ff=128, n_queries=4, dropout=0.0),
        decoder=DecoderConfig(
            d_model=64, n_heads=4, n_layers=3, expert_hidden=128, n_experts=4, dropout=0.0, recon_layers=1
        ),
        losses=LossConfig(contrastive_dim=32),
        sampling=SamplingConfig(num_samples=32, steps=20),
    ),
    "full": ForecasterConfig(
        ts_encoder=TSEncoderConfig(patch_len=6, stride=3, d_model=128, n_heads=8, n_layers=8, d_ff=12_288),
        text_encoder=TextEncoderConfig(backbone="all-MiniLM-L6-v2"),
        qformer=QFormerConfig(d_model=256, n_heads=8, n_layers=12, d_ff=4_608, n_queries=8),
        decoder=DecoderConfig(d_model=256, n_heads=8, n_layers=12, expert_hidden=1024, n_experts=16, recon_layers=2),
    ),
}


def resolve_config(preset: str, overrides: Mapping[str, Mapping[str, Any] | None] | None = None) -> ForecasterConfig:
    """The preset named `preset` with `overrides` {component: {field: value}} applied; unknown names raise."""
    if preset not in PRESETS:
        raise FinfusionError(f"unknown multimodal preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[preset]
    changes: dict[str, Any] = {}
    for part, values in (overrides or {}).items():
        if not values:
            continue
        if not hasattr(config, part):
            known = ", ".join(f.name for f in fields(config))
            raise FinfusionError(f"multimodal model: unknown config part {part!r}; known parts: {known}")
        current = getattr(config, part)
        allowed = {f.name for f in fields(current)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise FinfusionError(
                f"multimodal model: unknown {part} option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
            )
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        changes[part] = replace(current, **fixed)
    return replace(config, **changes)
