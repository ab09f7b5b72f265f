"""Settings of the learned candle tokenizer, apart from the torch code so that the CLI can show them cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finfusion.features.vq import VQVAE


@dataclass(frozen=True)
class VQConfig:
    """Patch, model and training settings of a VQ tokenizer (defaults train in seconds on a CPU)."""

    patch_len: int = 8
    codebook_size: int = 64
    dim: int = 32
    hidden: int = 128
    volume: bool = True
    epochs: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    seed: int = 0
    decay: float = 0.9
    commitment_weight: float = 0.25
    kmeans_init: bool = True
    dead_code_threshold: float = 1.0

    def build(self) -> VQVAE:
        """A fresh (untrained) model for these settings."""
        from finfusion.features.vq import VQVAE, patch_channels

        return VQVAE(
            self.patch_len,
            len(patch_channels(self.volume)),
            codebook_size=self.codebook_size,
            dim=self.dim,
            hidden=self.hidden,
            decay=self.decay,
            commitment_weight=self.commitment_weight,
            kmeans_init=self.kmeans_init,
            dead_code_threshold=self.dead_code_threshold,
        )
