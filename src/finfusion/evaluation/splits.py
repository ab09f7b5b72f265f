"""Time-ordered splits: walk-forward (rolling or expanding, with refit) and purged, embargoed k-fold.

Samples are described by two arrays of length N, in any order:
- `times` [N]: when sample i's label window starts (its decision time), integers or datetime64;
- `label_ends` [N]: when its label is known (>= times); defaults to `times` (a label with no look-ahead).
Sample i's label window is the closed interval [times[i], label_ends[i]]. Block sizes and embargoes count
*periods*, the distinct values of `times`, so that every sample of one timestamp (a panel of assets) falls in the
same block. Splits hold sample indices (positions in those arrays), each sorted ascending.

Purging drops a sample from train (or validate) when its label window overlaps the label window of any held-out
sample (validate or test), so no label used in fitting peeks into a held-out label.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Index = NDArray[np.int64]
Reason = Literal["train", "validate", "test", "purged", "embargoed", "outside"]

_EMPTY = np.empty(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Split:
    """One fold: train / validate / test sample indices, and the samples left out by purge or embargo.

    `purged_by[k]` is a held-out sample whose label window overlaps that of `purged[k]`, and `purged_from[k]` the
    block it was taken from ("train" or "validate"); `embargoed_by[k]` is the held-out sample whose embargo covers
    `embargoed[k]`. `times` and `label_ends` are the full arrays [N] the split was made from."""

    fold: int
    train: Index
    validate: Index
    test: Index
    purged: Index
    purged_by: Index
    purged_from: tuple[str, ...]
    embargoed: Index
    embargoed_by: Index
    embargo: int
    times: NDArray
    label_ends: NDArray

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{name}={getattr(self, name).size}" for name in ("train", "validate", "test", "purged", "embargoed")
        )
        return f"Split(fold={self.fold}, {sizes})"

    def _find(self, indices: Index, i: int) -> int:
        position = int(np.searchsorted(indices, i))
        return position if position < indices.size and indices[position] == i else -1

    def reason(self, i: int) -> Reason:
        """Which part of this fold sample i belongs to: train, validate, test, purged, embargoed or outside."""
        if not 0 <= i < self.times.size:
            raise IndexError(f"sample {i} is not among the {self.times.size} samples")
        parts: tuple[tuple[Reason, Index], ...] = (
            ("train", self.train),
            ("validate", self.validate),
            ("test", self.test),
            ("purged", self.purged),
            ("embargoed", self.embargoed),
        )
        for name, indices in parts:
            if self._find(indices, i) >= 0:
                return name
        return "outside"

    def _window(self, i: int) -> str:
        return f"[{self.times[i]}, {self.label_ends[i]}]"

    def explain(self, i: int) -> str:
        """A sentence saying why sample i is in or out of this fold, naming the sample that caused a purge or
        embargo."""
        reason = self.reason(i)
        head = f"sample {i} (label window {self._window(i)})"
        if reason in ("train", "validate", "test"):
            return f"{head} is in the {reason} block of fold {self.fold}"
        if reason == "purged":
            k = self._find(self.purged, i)
            j = int(self.purged_by[k])
            return (
                f"{head} is purged from the {self.purged_from[k]} block of fold {self.fold}: its label window "
                f"overlaps that of {self.reason(j)} sample {j} {self._window(j)}"
            )
        if reason == "embargoed":
            j = int(self.embargoed_by[self._find(self.embargoed, i)])
            role = self.reason(j) if self.reason(j) in ("validate", "test") else "held-out"
            side = f"after the label end of {role} sample {j} {self._window(j)}, the latest of its block"
            if self.times[i] < self.times[j]:
                side = f"before {role} sample {j} {self._window(j)}, the first of its block"
            return f"{head} is embargoed in fold {self.fold}: it starts within the {self.embargo}-period embargo {side}"
        used = np.concatenate([self.train, self.validate, self.test, self.purged, self.embargoed])
        return (
            f"{head} is outside fold {self.fold}: it is in none of its blocks, which span "
            f"{self.times[used].min()} to {self.times[used].max()}"
        )


@dataclass(frozen=True)
class _Timeline:
    starts: NDArray
    ends: NDArray
    periods: NDArray
    period_of: Index

    @classmethod
    def build(cls, times: ArrayLike | int, label_ends: ArrayLike | None) -> _Timeline:
        starts = np.arange(times) if isinstance(times, int) else np.asarray(times)
        ends = starts if label_ends is None else np.asarray(label_ends)
        if starts.ndim != 1 or ends.shape != starts.shape:
            raise ValueError(f"times and label_ends must be 1-d of equal length, got {starts.shape} and {ends.shape}")
        if np.any(ends < starts):
            raise ValueError("a label ends before it starts (label_ends < times)")
        periods, period_of = np.unique(starts, return_inverse=True)
        return cls(starts, ends, periods, period_of.astype(np.int64))

    def in_periods(self, first: int, stop: int) -> Index:
        """Samples whose period position lies in [first, stop)."""
        return np.flatnonzero((self.period_of >= first) & (self.period_of < stop)).astype(np.int64)

    def purge(self, candidates: Index, held_out: Index) -> tuple[Index, Index, Index]:
        """Split `candidates` into (kept, purged, witness): purged ones overlap a held-out label window, and
        witness[k] names one such held-out sample. Held-out windows are sorted by start with a running maximum of
        their ends, so each candidate is one binary search: O((C + H) log H)."""
        if held_out.size == 0 or candidates.size == 0:
            return candidates, _EMPTY, _EMPTY
        order = held_out[np.argsort(self.starts[held_out], kind="stable")]
        held_starts = self.starts[order]
        held_ends = self.ends[order]
        running_max = np.maximum.accumulate(held_ends)
        positions = np.arange(order.size)
        argmax = np.maximum.accumulate(np.where(held_ends == running_max, positions, 0))
        reach = np.searchsorted(held_starts, self.ends[candidates], side="right")
        last = np.maximum(reach - 1, 0)
        overlaps = (reach > 0) & (running_max[last] >= self.starts[candidates])
        return candidates[~overlaps], candidates[overlaps], order[argmax[last[overlaps]]]


class WalkForward:
    """Walk-forward folds over periods: [train][embargo][validate][embargo][test], moved forward by `step`.

    mode "rolling" keeps a train block of `train` periods; "expanding" starts every train block at the first period
    and grows it by `step` each fold. `validate` may be 0 (then there is one embargo gap, before test). The model is
    refit on each fold's train block. `embargo` periods are left out before each held-out block (a gap that keeps
    serially correlated neighbours out); with `purge`, validate samples whose label windows overlap a test label
    window are dropped, then train samples overlapping a remaining validate or a test label window. `step`
    defaults to `test`, so test blocks tile the timeline without overlap; the last test block is shorter when the
    timeline ends inside it (never dropped). `start` is the first period of the first train block (a rolling
    evaluation that should begin its tests at a given date starts its first `train` block that many periods
    earlier); an expanding train block always starts at period 0."""

    def __init__(
        self,
        train: int,
        validate: int,
        test: int,
        step: int | None = None,
        mode: Literal["rolling", "expanding"] = "rolling",
        purge: bool = True,
        embargo: int = 0,
        start: int = 0,
    ) -> None:
        self.step = test if step is None else step
        if train < 1 or test < 1 or validate < 0 or self.step < 1 or embargo < 0 or start < 0:
            raise ValueError(
                "need train >= 1, test >= 1, step >= 1, validate >= 0, embargo >= 0 and start >= 0 periods"
            )
        self.start = start
        if mode not in ("rolling", "expanding"):
            raise ValueError(f"mode must be 'rolling' or 'expanding', got {mode!r}")
        self.train, self.validate, self.test = train, validate, test
        self.mode = mode
        self.purge = purge
        self.embargo = embargo

    @property
    def span(self) -> int:
        """Periods one fold covers, from the start of a rolling train block to the end of its test block."""
        gaps = 2 if self.validate else 1
        return self.train + self.validate + self.test + gaps * self.embargo

    def test_start(self, fold: int) -> int:
        """The first period of fold `fold`'s test block."""
        gaps = 2 if self.validate else 1
        return self.start + fold * self.step + self.train + self.validate + gaps * self.embargo

    def n_splits(self, n_periods: int) -> int:
        """Number of folds over `n_periods` distinct times: every fold whose test block starts inside the timeline
        (the last one may be shorter than `test`)."""
        first = self.test_start(0)
        return 0 if n_periods <= first else (n_periods - first - 1) // self.step + 1

    def split(self, times: ArrayLike | int, label_ends: ArrayLike | None = None) -> Iterator[Split]:
        """Folds over samples with start `times` [N] (or N samples at times 0..N-1) and `label_ends` [N]."""
        line = _Timeline.build(times, label_ends)
        for fold in range(self.n_splits(line.periods.size)):
            yield self._fold(line, fold)

    def _fold(self, line: _Timeline, fold: int) -> Split:
        train_end = self.start + fold * self.step + self.train
        train_start = 0 if self.mode == "expanding" else self.start + fold * self.step
        validate_start = train_end + self.embargo
        validate_end = validate_start + self.validate
        test_start = validate_end + (self.embargo if self.validate else 0)
        train = line.in_periods(train_start, train_end)
        validate = line.in_periods(validate_start, validate_end)
        test = line.in_periods(test_start, test_start + self.test)
        gap_before_validate = line.in_periods(train_end, validate_start) if self.validate else _EMPTY
        gap_before_test = line.in_periods(test_start - self.embargo, test_start)
        embargoed = np.concatenate([gap_before_validate, gap_before_test])
        embargoed_by = np.concatenate(
            [
                np.full(gap_before_validate.size, _first(line, validate), dtype=np.int64),
                np.full(gap_before_test.size, _first(line, test), dtype=np.int64),
            ]
        )
        purged, purged_by, purged_from = _EMPTY, _EMPTY, np.empty(0, dtype=np.str_)
        if self.purge:
            validate, lost_validate, by_validate = line.purge(validate, test)
            train, lost_train, by_train = line.purge(train, np.concatenate([validate, test]))
            purged = np.concatenate([lost_train, lost_validate])
            purged_by = np.concatenate([by_train, by_validate])
            purged_from = np.repeat(["train", "validate"], [lost_train.size, lost_validate.size])
        order = np.argsort(purged, kind="stable")
        by_index = np.argsort(embargoed, kind="stable")
        return Split(
            fold=fold,
            train=train,
            validate=validate,
            test=test,
            purged=purged[order],
            purged_by=purged_by[order],
            purged_from=tuple(purged_from[order].tolist()),
            embargoed=embargoed[by_index],
            embargoed_by=embargoed_by[by_index],
            embargo=self.embargo,
            times=line.starts,
            label_ends=line.ends,
        )


def _first(line: _Timeline, block: Index) -> int:
    """The earliest-starting sample of a block (the lowest index among ties); -1 for an empty block."""
    if block.size == 0:
        return -1
    return int(block[np.argmin(line.starts[block])])


class PurgedKFold:
    """K-fold cross-validation for overlapping labels (López de Prado 2018, ch. 7).

    The periods are cut into `n_splits` contiguous test blocks. For each, every other sample trains except
    - purged: its label window overlaps the label window of a test sample;
    - embargoed: it starts within `embargo` periods after the test block's last label end (an int counts periods,
      a float in [0, 1) is that fraction of all periods, rounded up, as in 0.01 of 250 periods -> 3).
    There is no validate block."""

    def __init__(self, n_splits: int = 5, embargo: int | float = 0) -> None:
        if n_splits < 2:
            raise ValueError(f"n_splits must be >= 2, got {n_splits}")
        if isinstance(embargo, bool) or embargo < 0 or (isinstance(embargo, float) and embargo >= 1):
            raise ValueError(f"embargo must be a number of periods >= 0 or a fraction in [0, 1), got {embargo!r}")
        self.n_splits = n_splits
        self.embargo = embargo

    def embargo_periods(self, n_periods: int) -> int:
        """The embargo in periods for a timeline of `n_periods`."""
        if isinstance(self.embargo, float):
            return math.ceil(self.embargo * n_periods - 1e-9)
        return int(self.embargo)

    def split(self, times: ArrayLike | int, label_ends: ArrayLike | None = None) -> Iterator[Split]:
        """Folds over samples with start `times` [N] (or N samples at times 0..N-1) and `label_ends` [N]."""
        line = _Timeline.build(times, label_ends)
        n_periods = line.periods.size
        if n_periods < self.n_splits:
            raise ValueError(f"{n_periods} distinct times cannot make {self.n_splits} folds")
        embargo = self.embargo_periods(n_periods)
        everyone = np.arange(line.starts.size, dtype=np.int64)
        for fold, block in enumerate(np.array_split(np.arange(n_periods), self.n_splits)):
            test = line.in_periods(int(block[0]), int(block[-1]) + 1)
            latest = int(test[np.argmax(line.ends[test])])
            after = int(np.searchsorted(line.periods, line.ends[latest], side="right"))
            in_embargo = (line.period_of >= after) & (line.period_of < after + embargo)
            candidates = everyone[~np.isin(everyone, test) & ~in_embargo]
            train, purged, purged_by = line.purge(candidates, test)
            embargoed = np.flatnonzero(in_embargo).astype(np.int64)
            yield Split(
                fold=fold,
                train=train,
                validate=_EMPTY,
                test=test,
                purged=purged,
                purged_by=purged_by,
                purged_from=("train",) * purged.size,
                embargoed=embargoed,
                embargoed_by=np.full(embargoed.size, latest, dtype=np.int64),
                embargo=embargo,
                times=line.starts,
                label_ends=line.ends,
            )
