"""Temporal mixup and feature noise (trainer.augmentation): what they do to a batch, and that only training batches
get them (validation, prediction and the scores see the data as it is)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from finfusion.errors import FinfusionError
from finfusion.training.augmentation import Augmentation, augment
from finfusion.training.tasks import ForecastTask
from finfusion.training.trainer import fit_task, predict_task, validate_task
from tests.test_training import TinyForecaster, experiment_cfg, loaders


def batch() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "past": torch.randn(8, 5, 2, generator=gen),
        "past_mask": torch.ones(8, 5, dtype=torch.bool),
        "future": torch.randn(8, 3, 1, generator=gen),
        "label": torch.arange(8) % 2,
        "origin_us": torch.arange(8),
    }


def test_noise_perturbs_float_inputs_only_with_the_asked_spread() -> None:
    raw, noisy = batch(), batch()
    augment(noisy, torch.Generator().manual_seed(1), noise_std=0.5)
    difference = noisy["past"] - raw["past"]
    assert 0.4 < float(difference.std()) < 0.6
    for key in ("past_mask", "future", "label", "origin_us"):  # targets, masks and ids are left as they are
        assert torch.equal(noisy[key], raw[key])


def test_mixup_mixes_inputs_and_targets_with_one_dominant_lambda() -> None:
    raw, mixed = batch(), batch()
    augment(mixed, torch.Generator().manual_seed(2), mixup_alpha=0.4)
    # each row is lambda * itself + (1 - lambda) * another row, the same lambda for inputs and targets
    flat_raw = torch.cat([raw["past"].flatten(1), raw["future"].flatten(1)], dim=1)
    flat_mixed = torch.cat([mixed["past"].flatten(1), mixed["future"].flatten(1)], dim=1)
    solved = []
    for i in range(8):
        for j in range(8):
            if i == j:
                continue
            gap = flat_raw[i] - flat_raw[j]
            lam = float(((flat_mixed[i] - flat_raw[j]) @ gap) / (gap @ gap))
            if torch.allclose(lam * flat_raw[i] + (1 - lam) * flat_raw[j], flat_mixed[i], atol=1e-5):
                solved.append(lam)
                break
        else:
            assert torch.allclose(flat_mixed[i], flat_raw[i], atol=1e-6)  # mixed with itself
            solved.append(1.0)
    assert min(solved) >= 0.5 and len({round(x, 5) for x in solved if x < 1.0}) <= 1
    assert torch.equal(mixed["label"], raw["label"]) and torch.equal(mixed["past_mask"], raw["past_mask"])


class Recording(TinyForecaster):
    """Keeps a copy of the `past` of every batch it is given, by mode."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[bool, list[Tensor]] = {True: [], False: []}

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        self.seen[self.training].append(batch["past"].detach().clone())
        return super().forward(batch)


def test_only_training_batches_are_augmented(tmp_path: Path) -> None:
    train, val = loaders(batch_size=16, n_train=32)
    cfg = experiment_cfg(max_epochs=1, augmentation={"noise_std": 1.0, "mixup_alpha": 0.3})
    torch.manual_seed(0)
    model = Recording()
    task = ForecastTask(model, lr=1e-2)
    fit_task(task, (train, val), tmp_path / "run", cfg, resume="never")
    train_values = {round(float(v), 4) for v in train.dataset.past.flatten()}
    assert not any(round(float(v), 4) in train_values for v in model.seen[True][0].flatten()[:20])
    val_raw = torch.cat([val.dataset[i]["past"][None] for i in range(len(val.dataset))])
    torch.testing.assert_close(torch.cat(model.seen[False])[: len(val_raw)], val_raw)  # validation: as it is
    model.seen = {True: [], False: []}
    validate_task(task, val, cfg.trainer)
    predict_task(task, val, cfg.trainer)
    assert not model.seen[True]
    half = len(model.seen[False]) // 2  # validation, then prediction, of the same batches
    for seen in (model.seen[False][:half], model.seen[False][half:]):
        torch.testing.assert_close(torch.cat(seen), val_raw)


def test_unknown_or_negative_settings_are_named() -> None:
    with pytest.raises(FinfusionError, match="unknown key 'mixup'"):
        Augmentation({"mixup": 0.2}, seed=0)
    with pytest.raises(FinfusionError, match=">= 0"):
        Augmentation({"noise_std": -1.0}, seed=0)
