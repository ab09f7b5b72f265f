"""Training-time augmentation for any task: temporal mixup and feature-noise injection, set in the trainer part
(`trainer.augmentation`) and applied by a callback to training batches only, so validation, prediction and every
score never see it.

    augmentation:
      mixup_alpha: 0.0     # > 0: mix each training window with another of the batch, lambda ~ Beta(a, a)
      noise_std: 0.0       # > 0: add N(0, noise_std^2) to the inputs (they are z-scored: a share of one std)
      inputs: [past, context, stock]       # float inputs the two act on (those a batch has)
      targets: [future, relevance]         # float targets mixed with the same lambda

Temporal mixup (Zhang et al. 2018, applied to windows of time series): batch row i becomes lambda * row i +
(1 - lambda) * row perm(i) for every listed input and target, with lambda >= 1/2 (max(lambda, 1 - lambda)), so the
row stays mostly itself: its masks, integer labels (movement class, direction) and identifiers are the dominant
row's and are left as they are. The draws come from a generator seeded by (seed, epoch, batch), so a resumed run
draws what the uninterrupted one did (training/resume.py).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from finfusion.errors import FinfusionError

AUGMENTATION_DEFAULTS: dict[str, Any] = {
    "mixup_alpha": 0.0,
    "noise_std": 0.0,
    "inputs": ["past", "context", "stock"],
    "targets": ["future", "relevance"],
}
#: Stream of the augmentation draws, apart from the step stream of training/resume.py.
_STREAM = 2


def augment(
    batch: MutableMapping[str, Tensor],
    generator: torch.Generator,
    mixup_alpha: float = 0.0,
    noise_std: float = 0.0,
    inputs: Sequence[str] = AUGMENTATION_DEFAULTS["inputs"],
    targets: Sequence[str] = AUGMENTATION_DEFAULTS["targets"],
) -> None:
    """Augment `batch` in place (module docstring); keys it lacks and non-float tensors are left alone."""
    floats = {key for key, value in batch.items() if torch.is_floating_point(value)}
    chosen_inputs = [key for key in inputs if key in floats]
    if mixup_alpha > 0:
        size = next(iter(batch.values())).shape[0]
        draw = float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator))).beta(
            mixup_alpha, mixup_alpha))  # fmt: skip
        lam = max(draw, 1.0 - draw)
        perm = torch.randperm(size, generator=generator)
        for key in [*chosen_inputs, *(key for key in targets if key in floats)]:
            value = batch[key]
            batch[key] = lam * value + (1.0 - lam) * value[perm.to(value.device)]
    if noise_std > 0:
        for key in chosen_inputs:
            value = batch[key]
            noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
            batch[key] = value + noise_std * noise.to(value.device)


class Augmentation(Callback):
    """Applies `augment` to every training batch (see the module docstring)."""

    def __init__(self, options: Mapping[str, Any], seed: int) -> None:
        unknown = sorted(set(options) - set(AUGMENTATION_DEFAULTS))
        if unknown:
            raise FinfusionError(
                f"trainer.augmentation: unknown key '{unknown[0]}'; allowed: {', '.join(AUGMENTATION_DEFAULTS)}"
            )
        self.options = {**AUGMENTATION_DEFAULTS, **options}
        if float(self.options["mixup_alpha"]) < 0 or float(self.options["noise_std"]) < 0:
            raise FinfusionError("trainer.augmentation: mixup_alpha and noise_std must be >= 0")
        self.seed = seed

    @staticmethod
    def wanted(options: Mapping[str, Any]) -> bool:
        return float(options.get("mixup_alpha", 0.0)) > 0 or float(options.get("noise_std", 0.0)) > 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        key = np.random.SeedSequence([self.seed, _STREAM, trainer.current_epoch, batch_idx]).generate_state(1)[0]
        augment(
            batch,
            torch.Generator().manual_seed(int(key)),
            mixup_alpha=float(self.options["mixup_alpha"]),
            noise_std=float(self.options["noise_std"]),
            inputs=list(self.options["inputs"]),
            targets=list(self.options["targets"]),
        )
