"""Exact resume (training/resume.py): a run killed at any step and resumed from its last checkpoint ends with the
uninterrupted run's weights, bit for bit, whatever the loader and wherever the checkpoints; one last.ckpt; a file
that is not a checkpoint of the model is one error naming it, before anything is read as code or written."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from finfusion.errors import FinfusionError
from finfusion.training.tasks import ForecastTask
from finfusion.training.trainer import CHECKPOINT_DIR, LAST_CHECKPOINT, best_state_dict, build_trainer, fit_task

REPO = Path(__file__).resolve().parents[1]
L_, C, H = 6, 2, 3
N_TRAIN, N_VAL, BATCH = 60, 24, 12  # 5 training batches an epoch
EPOCHS = 3  # 15 optimiser steps


class Windows(Dataset):
    """Random windows whose future is a noisy linear function of their past."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.past = torch.randn(n, L_, C, generator=generator)
        self.future = (self.past.flatten(1)[:, :H] + 0.1 * torch.randn(n, H, generator=generator)).view(n, H, 1)

    def __len__(self) -> int:
        return len(self.past)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "past": self.past[i],
            "past_mask": torch.ones(L_, dtype=torch.bool),
            "future": self.future[i],
            "future_mask": torch.ones(H, dtype=torch.bool),
            "origin_us": torch.tensor(i),
        }


class Dropped(nn.Module):
    """A small MLP with dropout: every training step draws from torch's generator."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(L_ * C, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, H))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"point": self.net(batch["past"].flatten(1)).view(-1, H, 1)}


class EpochBatches(Sampler[list[int]]):
    """Runs of consecutive items in an order drawn from (seed, epoch): a batch sampler with `set_epoch`."""

    def __init__(self, n_items: int, batch_size: int, seed: int) -> None:
        self.n_items, self.batch_size, self.seed, self.epoch = n_items, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in np.random.default_rng([self.seed, self.epoch]).permutation(len(self)):
            yield list(range(batch * self.batch_size, min((batch + 1) * self.batch_size, self.n_items)))

    def __len__(self) -> int:
        return -(-self.n_items // self.batch_size)


#: Training loaders as the families make them.
LOADERS: dict[str, Callable[[Dataset], DataLoader]] = {
    "shuffled": lambda data: DataLoader(data, batch_size=BATCH, shuffle=True),  # forecast: torch's generator
    "own generator": lambda data: DataLoader(  # movement: a generator of the loader's own
        data, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(5)
    ),
    "batch sampler": lambda data: DataLoader(data, batch_sampler=EpochBatches(len(data), BATCH, seed=5)),
}


class Killed(Exception):
    """The process died."""


class KillAfter(Callback):
    """Dies right after optimiser step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


def config(every: int | None, **trainer: object) -> DictConfig:
    options = {
        "seed": 11,
        "max_epochs": EPOCHS,
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "loggers": [],
        "checkpoint": {"monitor": "val_loss", "mode": "min", "save_top_k": 2, "every_n_train_steps": every},
        "early_stopping": {"enabled": True, "monitor": "val_loss", "patience": 2},
        **trainer,
    }
    return OmegaConf.create({"trainer": options, "task": {"name": "forecast", "loss": "mse"}})


class Started(Callback):
    """Records the step each fit starts from."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.steps.append(trainer.global_step)


def train(
    run: Path, every: int | None, loader: str = "shuffled", kill_after: int | None = None, *callbacks: Callback
) -> ForecastTask:
    """Fit (resuming from run's last.ckpt when there is one); the task's model holds the best weights after."""
    torch.manual_seed(0)
    task = ForecastTask(Dropped(), lr=2e-2, warmup_fraction=0.2)  # the warm-up asks for estimated_stepping_batches
    loaders = (LOADERS[loader](Windows(N_TRAIN, 0)), DataLoader(Windows(N_VAL, 1), batch_size=BATCH))
    kill = [KillAfter(kill_after)] if kill_after else []
    fit_task(task, loaders, run, config(every), resume="auto", callbacks=[*callbacks, *kill])
    return task


def last_checkpoint(run: Path) -> dict[str, Any]:
    return torch.load(run / CHECKPOINT_DIR / LAST_CHECKPOINT, map_location="cpu", weights_only=True)


def final_weights(run: Path) -> dict[str, Tensor]:
    return last_checkpoint(run)["state_dict"]


def saved_step(run: Path) -> int:
    """The step the last checkpoint was written at (0 without one)."""
    return last_checkpoint(run)["global_step"] if (run / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file() else 0


def assert_same_run(run: Path, reference: Path, trained: ForecastTask, uninterrupted: ForecastTask) -> None:
    """Same best weights, same final weights, same checkpoint files: one last.ckpt and the same best-k."""
    best, expected = trained.model.state_dict(), uninterrupted.model.state_dict()
    assert all(torch.equal(best[name], expected[name]) for name in expected)
    last, expected_last = final_weights(run), final_weights(reference)
    assert expected_last.keys() == last.keys() and all(torch.equal(last[k], expected_last[k]) for k in expected_last)
    names = sorted(path.name for path in (run / CHECKPOINT_DIR).iterdir())
    assert names == sorted(path.name for path in (reference / CHECKPOINT_DIR).iterdir())
    assert [name for name in names if name.startswith("last")] == [LAST_CHECKPOINT]


@pytest.mark.parametrize(
    ("every", "loader"),
    [(None, "shuffled"), (2, "shuffled"), (2, "own generator"), (3, "batch sampler")],
    ids=["epoch-ends", "every-2-steps", "loader-generator", "batch-sampler"],
)
def test_a_run_killed_at_any_step_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, every: int | None, loader: str
) -> None:
    reference = tmp_path / "uninterrupted"
    uninterrupted = train(reference, every, loader)
    run = tmp_path / "killed"
    started, saved = Started(), []
    # before any checkpoint, after an epoch's last batch (before its validation), mid-epoch, right at a step
    # checkpoint's step: each run resumes from the last checkpoint the previous kill left
    for step in (1, 5, 8, 12):
        saved.append(saved_step(run))
        with pytest.raises(Killed):
            train(run, every, loader, step, started)
    saved.append(saved_step(run))
    assert_same_run(run, reference, train(run, every, loader, None, started), uninterrupted)
    assert started.steps == saved and started.steps[-1] >= 10  # every run started where the last checkpoint was


KILLED_PROCESS = """
import os, signal, sys
from pathlib import Path
from tests.test_resume import KillAfter, train

class SigKill(KillAfter):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

train(Path(sys.argv[1]), 2, "shuffled", None, SigKill(7))
"""


def test_a_process_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    run = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILLED_PROCESS, str(run)], cwd=REPO, check=False)
    assert killed.returncode == -signal.SIGKILL and saved_step(run) == 6
    reference = tmp_path / "uninterrupted"
    assert_same_run(run, reference, train(run, 2), train(reference, 2))


def test_step_checkpoints_and_validation_inside_an_epoch_cannot_be_combined(tmp_path: Path) -> None:
    with pytest.raises(FinfusionError, match="every_n_train_steps and val_check_interval"):
        build_trainer(config(2, val_check_interval=2).trainer, tmp_path)


# ---------------------------------------------------------------- checkpoints that are not checkpoints


class Payload:
    """Unpickling this runs code: it creates the file named `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def crafted_files(folder: Path) -> dict[str, Path]:
    """Files that must never load: code to unpickle (plain and inside a torch zip), noise, half a checkpoint,
    weights without training state, and the checkpoint of another model."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "code-ran"
    real = folder / "real"
    train(real, None)
    whole = (real / CHECKPOINT_DIR / LAST_CHECKPOINT).read_bytes()
    files = {
        "pickle": folder / "pickle.ckpt",
        "torch zip with code": folder / "zip.ckpt",
        "random bytes": folder / "random.ckpt",
        "truncated": folder / "truncated.ckpt",
        "weights only": folder / "weights.ckpt",
        "another model": folder / "other.ckpt",
    }
    files["pickle"].write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    torch.save({"state_dict": {}, "hook": Payload(marker)}, files["torch zip with code"])
    files["random bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    torch.save({"state_dict": {"model.net.0.weight": torch.zeros(16, L_ * C)}}, files["weights only"])
    other = torch.load(real / CHECKPOINT_DIR / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
    other["state_dict"] = {key: torch.zeros(2, *value.shape) for key, value in other["state_dict"].items()}
    torch.save(other, files["another model"])
    return files


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return crafted_files(tmp_path_factory.mktemp("crafted"))


REASONS = {
    "pickle": "not a torch checkpoint",
    "torch zip with code": "does not unpickle it",
    "random bytes": "not a torch checkpoint",
    "truncated": "not a torch checkpoint",
    "weights only": "not a training checkpoint",
    "another model": "weights are not this model's",
}


@pytest.mark.parametrize("kind", list(REASONS))
def test_resuming_from_a_file_that_is_not_a_checkpoint_of_the_model_is_one_error(
    kind: str, crafted: dict[str, Path], tmp_path: Path
) -> None:
    path = crafted[kind]
    run = tmp_path / "run"
    task = ForecastTask(Dropped())
    loaders = (LOADERS["shuffled"](Windows(N_TRAIN, 0)), None)
    with pytest.raises(FinfusionError, match=REASONS[kind]) as error:
        fit_task(task, loaders, run, config(None), resume=path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    assert not run.exists()  # refused before the run folder is written
    assert not (path.parent / "code-ran").exists()


@pytest.mark.parametrize("kind", ["pickle", "torch zip with code", "random bytes", "truncated"])
def test_reading_the_weights_of_a_file_that_is_not_a_checkpoint_is_one_error(
    kind: str, crafted: dict[str, Path]
) -> None:
    path = crafted[kind]
    with pytest.raises(FinfusionError, match=REASONS[kind]) as error:
        best_state_dict(path)
    assert str(error.value).startswith(f"{path}: ")
    assert not (path.parent / "code-ran").exists()


def test_a_missing_checkpoint_to_resume_from_is_an_error(tmp_path: Path) -> None:
    loaders = (LOADERS["shuffled"](Windows(N_TRAIN, 0)), None)
    with pytest.raises(FinfusionError, match="no checkpoint to resume from at"):
        fit_task(ForecastTask(Dropped()), loaders, tmp_path / "run", config(None), resume=tmp_path / "absent.ckpt")
