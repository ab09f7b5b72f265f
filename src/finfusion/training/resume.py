"""Exact resume: a run killed at any step and resumed from its last checkpoint ends with the weights of the
uninterrupted run, bit for bit (on CPU).

What a resumed step computes is a pure function of the checkpoint and the trainer's seed:

- **the data order**: `ResumableBatches` wraps the training loader. Before each epoch it seeds torch, numpy and
  python (and the loader's own generator, if it has one) from (seed, epoch) and hands the epoch to every sampler and
  the dataset of the loader that have `set_epoch`, so an epoch's batches depend on (seed, epoch) only, never on how
  many epochs this process ran. The checkpoint records how many batches of which epoch were served, and a resumed
  run skips those. In a distributed run (DDP / FSDP through Lightning) every process orders the epoch alike and
  serves every world-th batch (rank r: batches r, r + world, ...), the same number in each (the remainder dropped);
- **the randomness of a step** (dropout, sampling): `ExactResume` seeds torch, numpy and python from
  (seed, epoch, batch) before each training batch, so nothing drawn outside the training steps (validation, a
  loader's worker seed, the skipped batches) shifts it;
- **the resume point**: `LastCheckpoint` writes the one `last.ckpt` at every epoch end, after its validation, and
  every n optimiser steps inside an epoch when asked, only where Lightning resumes exactly (see its docstring);
  `AtomicCheckpointIO` renames every checkpoint into place, so a kill never leaves half of one;
- **the read**: `read_checkpoint` loads weights-only (nothing is unpickled) and turns a file that is not a
  checkpoint, or not one of this model (`check_weights`), into one `FinfusionError` naming it.

A training loader must therefore draw its order from the state `set_epoch` gives its sampler, from torch's global
generator or from its `generator` (a `DataLoader(shuffle=True)` with or without one), never from a generator of a
sampler's own that carries on from epoch to epoch (it would start over in a resumed process).
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor
from torch.utils.data import DataLoader

from finfusion.errors import FinfusionError

#: What a Lightning checkpoint must hold to resume a fit.
RESUME_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "epoch", "global_step")
_EPOCH_STREAM, _STEP_STREAM = 0, 1


def seed_all(*key: int) -> int:
    """Seed torch, numpy and python's generators from the integers `key` (through numpy's SeedSequence); returns
    the seed."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return seed


def rank_and_world() -> tuple[int, int]:
    """(rank, number of processes) of a distributed run (DDP / FSDP through Lightning), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResumableBatches:
    """The training batches of `loader`, epoch after epoch, as a pure function of (seed, epoch); see the module
    docstring. Lightning calls `sampler.set_epoch` before each epoch (`sampler` is this object) and
    `state_dict` / `load_state_dict` when it saves and restores a checkpoint."""

    def __init__(self, loader: DataLoader, seed: int) -> None:
        self.loader = loader
        self.seed = seed
        self.epoch = 0
        self.served = 0
        self._resume: tuple[int, int] | None = None

    @property
    def sampler(self) -> ResumableBatches:
        """Lightning hands the epoch to `loader.sampler.set_epoch`: here, to this object."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration serves, passed on to the loader's samplers and dataset."""
        self.epoch = epoch
        batch_sampler = getattr(self.loader, "batch_sampler", None)
        parts = (self.loader.sampler, batch_sampler, getattr(batch_sampler, "sampler", None), self.loader.dataset)
        for part in {id(part): part for part in parts if part is not None}.values():
            if callable(getattr(part, "set_epoch", None)):
                part.set_epoch(epoch)

    def __len__(self) -> int:
        _, world = rank_and_world()
        return len(self.loader) // world if world > 1 else len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        seed = seed_all(self.seed, _EPOCH_STREAM, self.epoch)
        if self.loader.generator is not None:  # a loader's own generator would restart with a resumed process
            self.loader.generator.manual_seed(seed)
        skip = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume = None
        self.served = 0
        rank, world = rank_and_world()
        share = len(self)
        for position, batch in enumerate(self.loader):
            if world > 1 and (position % world != rank or position >= share * world):
                continue  # another process's batch (every process orders the epoch alike, from the same seed)
            self.served += 1
            if self.served > skip:
                yield batch

    def state_dict(self) -> dict[str, int]:
        """Where the epoch in progress is: its number and how many of its batches were served."""
        return {"epoch": self.epoch, "served": self.served}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume in `state`'s epoch after the batches it had served (a later epoch starts from its first batch)."""
        self._resume = (int(state["epoch"]), int(state["served"]))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its path (`.NAME.partial`, fsynced) and renames it into place. Lightning's own
    write goes through the system's temporary folder and is copied over when that is another file system, so a kill
    there can leave half a checkpoint under the real name, and a stray temporary file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        torch.save(checkpoint, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)


class LastCheckpoint(Checkpoint):
    """Writes the resume point `path` at the end of every training epoch (after its validation, so the best-k and
    early-stopping states of that epoch are in it) and, with `every_n_steps`, right after every n-th optimiser step
    inside an epoch (never inside a gradient accumulation, nor after an epoch's last batch and before its
    validation: a run resumed from there would lose the accumulated gradients or skip the validation)."""

    def __init__(self, path: Path, every_n_steps: int | None = None) -> None:
        self.path = path
        self.every_n_steps = every_n_steps
        self._step_before = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if (
            self.every_n_steps
            and step != self._step_before
            and step % self.every_n_steps == 0
            and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole training state, not only the weights


class ExactResume(Callback):
    """Seeds torch, numpy and python from (seed, epoch, batch) before every training batch, and keeps `batches`'
    position in the checkpoint (see the module docstring). Lightning stores the position of a stateful loader too,
    but hands it back only when it sets the loader up after restoring, which a task asking for
    `trainer.estimated_stepping_batches` (the warm-up schedule) prevents: this callback's state is restored first."""

    def __init__(self, batches: ResumableBatches) -> None:
        self.batches = batches

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed_all(self.batches.seed, _STEP_STREAM, trainer.current_epoch, batch_idx)

    def state_dict(self) -> dict[str, int]:
        return self.batches.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches.load_state_dict(state_dict)


def read_checkpoint(path: str | Path, required: tuple[str, ...] = ("state_dict",)) -> dict[str, Any]:
    """The checkpoint in `path`, read weights-only (nothing in it is unpickled as code); a file that is not a
    readable torch checkpoint holding the `required` keys and a `state_dict` of tensors is a `FinfusionError`
    naming it."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise FinfusionError(f"{path}: cannot read the checkpoint ({exc.strerror})") from exc
    except pickle.UnpicklingError as exc:
        raise FinfusionError(
            f"{path}: the checkpoint holds objects other than tensors and plain values; finfusion reads checkpoints "
            "weights-only and does not unpickle it"
        ) from exc
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise FinfusionError(
            f"{path}: not a torch checkpoint (corrupt, truncated or not written by torch.save)"
        ) from exc
    missing = [key for key in required if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise FinfusionError(f"{path}: not a training checkpoint (it lacks {', '.join(missing)})")
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise FinfusionError(f"{path}: not a training checkpoint (its state_dict is not a set of named tensors)")
    return checkpoint


def check_weights(path: str | Path, saved: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    """`saved` (a checkpoint's state dict) has exactly the tensors `expected` has, shape for shape; otherwise a
    `FinfusionError` naming `path` and the first differences."""
    missing = [key for key in expected if key not in saved]
    extra = [key for key in saved if key not in expected]
    reshaped = [key for key in expected if key in saved and saved[key].shape != expected[key].shape]
    problems = [
        f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (("missing", missing), ("unexpected", extra), ("other shapes for", reshaped))
        if keys
    ]
    if problems:
        raise FinfusionError(f"{path}: the checkpoint's weights are not this model's ({'; '.join(problems)})")
