"""Walk-forward and purged k-fold splits: block layout, counts, and the purge/embargo guarantees."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finfusion.evaluation.splits import PurgedKFold, Split, WalkForward


def _overlapping_pairs(split: Split, fitted: np.ndarray, held_out: np.ndarray) -> list[tuple[int, int]]:
    """Every (fitted, held-out) pair whose closed label windows overlap, by brute force."""
    starts, ends = split.times, split.label_ends
    return [(int(i), int(j)) for i in fitted for j in held_out if starts[i] <= ends[j] and starts[j] <= ends[i]]


def _assert_partition(split: Split, n: int) -> None:
    parts = [split.train, split.validate, split.test, split.purged, split.embargoed]
    joined = np.concatenate(parts)
    assert joined.size == np.unique(joined).size, "a sample is in two parts"
    for part in parts:
        assert np.all(np.diff(part) > 0)
    for name, part in zip(("train", "validate", "test", "purged", "embargoed"), parts, strict=True):
        assert all(split.reason(int(i)) == name for i in part)
    outside = np.setdiff1d(np.arange(n), joined)
    assert all(split.reason(int(i)) == "outside" for i in outside)


def test_walk_forward_counts_and_blocks_for_known_sizes() -> None:
    walk = WalkForward(train=50, validate=10, test=10, step=10)
    splits = list(walk.split(100))
    assert walk.n_splits(100) == len(splits) == 4
    for k, split in enumerate(splits):
        assert split.train.tolist() == list(range(10 * k, 10 * k + 50))
        assert split.validate.tolist() == list(range(10 * k + 50, 10 * k + 60))
        assert split.test.tolist() == list(range(10 * k + 60, 10 * k + 70))


def test_walk_forward_count_with_embargo_and_default_step() -> None:
    walk = WalkForward(train=20, validate=5, test=7, embargo=2)
    # span 20 + 2 + 5 + 2 + 7 = 36; step defaults to the test size
    assert walk.n_splits(36) == 1
    assert walk.n_splits(30) == 1  # a test block of one period
    assert walk.n_splits(29) == 0
    assert walk.n_splits(36 + 7 * 3) == 4
    splits = list(walk.split(36 + 7 * 3 + 6))  # 6 periods after the fourth test block: a fifth, shorter one
    assert walk.n_splits(36 + 7 * 3 + 6) == len(splits) == 5
    assert splits[-1].test.tolist() == list(range(57, 63))


def test_a_rolling_walk_forward_from_a_start_keeps_its_train_length() -> None:
    walk = WalkForward(train=20, validate=5, test=5, embargo=0, start=30)
    splits = list(walk.split(70))
    assert [split.train.tolist() for split in splits[:2]] == [list(range(30, 50)), list(range(35, 55))]
    assert splits[0].test.tolist() == list(range(55, 60)) and len(splits) == 3
    expanding = WalkForward(train=20, validate=5, test=5, embargo=0, start=30, mode="expanding")
    assert next(iter(expanding.split(70))).train.tolist() == list(range(50))


def test_expanding_walk_forward_grows_its_train_block() -> None:
    splits = list(WalkForward(train=30, validate=0, test=5, step=5, mode="expanding").split(60))
    assert [split.train.size for split in splits] == [30, 35, 40, 45, 50, 55]
    assert all(split.train[0] == 0 for split in splits)
    assert [split.test[0] for split in splits] == [30, 35, 40, 45, 50, 55]


def test_walk_forward_blocks_are_disjoint_and_ordered() -> None:
    n = 120
    times = np.arange(n)
    for split in WalkForward(40, 10, 10, step=7, embargo=3).split(times, times + 4):
        _assert_partition(split, n)
        assert times[split.train].max() < times[split.validate].min()
        assert times[split.validate].max() < times[split.test].min()
        assert split.embargoed.size == 6


def test_walk_forward_blocks_count_periods_of_a_panel() -> None:
    days = np.repeat(np.arange(20), 3)  # three assets a day
    split = next(iter(WalkForward(train=10, validate=0, test=5).split(days)))
    assert split.train.size == 30 and split.test.size == 15
    assert set(days[split.test]) == {10, 11, 12, 13, 14}


def test_walk_forward_works_on_datetimes() -> None:
    times = np.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]")
    ends = times + np.timedelta64(5, "D")
    split = next(iter(WalkForward(train=30, validate=0, test=10).split(times, ends)))
    assert _overlapping_pairs(split, split.train, split.test) == []
    assert split.purged.size == 5
    assert "[2024-01-30, 2024-02-04]" in split.explain(int(split.purged[-1]))


def test_walk_forward_explains_each_reason() -> None:
    times = np.arange(30)
    split = next(iter(WalkForward(10, 3, 4, embargo=1).split(times, times + 3)))
    assert split.reason(0) == "train"
    assert split.reason(8) == "purged"
    assert "overlaps that of validate sample 11 [11, 14]" in split.explain(8)
    assert split.reason(12) == "purged"
    assert "purged from the validate block" in split.explain(12)
    assert "test sample 15 [15, 18]" in split.explain(12)
    assert split.reason(10) == "embargoed"
    assert "1-period embargo before validate sample 11" in split.explain(10)
    assert split.reason(14) == "embargoed"
    assert split.reason(29) == "outside"
    assert "outside fold 0" in split.explain(29)
    with pytest.raises(IndexError):
        split.reason(30)


def test_walk_forward_without_purge_keeps_overlaps() -> None:
    times = np.arange(30)
    split = next(iter(WalkForward(10, 0, 5, purge=False).split(times, times + 3)))
    assert split.purged.size == 0
    assert _overlapping_pairs(split, split.train, split.test) != []


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(20, 80),
    data=st.data(),
    train=st.integers(3, 15),
    validate=st.integers(0, 5),
    test=st.integers(1, 6),
    step=st.integers(1, 6),
    embargo=st.integers(0, 3),
    mode=st.sampled_from(["rolling", "expanding"]),
)
def test_walk_forward_purge_leaves_no_overlap(
    n: int,
    data: st.DataObject,
    train: int,
    validate: int,
    test: int,
    step: int,
    embargo: int,
    mode: Literal["rolling", "expanding"],
) -> None:
    times = np.sort(np.array(data.draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))))
    lengths = np.array(data.draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)))
    walk = WalkForward(train, validate, test, step, mode=mode, embargo=embargo)
    for split in walk.split(times, times + lengths):
        _assert_partition(split, n)
        assert _overlapping_pairs(split, split.train, np.concatenate([split.validate, split.test])) == []
        assert _overlapping_pairs(split, split.validate, split.test) == []
        for i, j in zip(split.purged, split.purged_by, strict=True):
            assert _overlapping_pairs(split, np.array([i]), np.array([j])) == [(i, j)]
            assert split.reason(int(j)) in ("validate", "test")


def test_purged_kfold_by_hand() -> None:
    times = np.arange(30)
    splits = list(PurgedKFold(n_splits=3, embargo=2).split(times, times + 3))
    assert len(splits) == 3
    first = splits[0]
    assert first.test.tolist() == list(range(10))
    # the first test block's labels reach period 12, so 10..12 overlap it, and 13, 14 are the embargo after it
    assert first.purged.tolist() == [10, 11, 12]
    assert first.embargoed.tolist() == [13, 14]
    assert first.train.tolist() == list(range(15, 30))
    middle = splits[1]
    assert middle.purged.tolist() == [7, 8, 9, 20, 21, 22]
    assert middle.embargoed.tolist() == [23, 24]
    assert middle.train.tolist() == [0, 1, 2, 3, 4, 5, 6, 25, 26, 27, 28, 29]


def test_purged_kfold_explains_purge_and_embargo() -> None:
    times = np.arange(30)
    middle = list(PurgedKFold(n_splits=3, embargo=2).split(times, times + 3))[1]
    assert middle.reason(8) == "purged"
    assert "overlaps that of test sample 11 [11, 14]" in middle.explain(8)
    assert middle.reason(21) == "purged"
    assert "test sample 19 [19, 22]" in middle.explain(21)
    assert middle.reason(24) == "embargoed"
    assert "2-period embargo after the label end of test sample 19 [19, 22]" in middle.explain(24)
    assert middle.reason(15) == "test"
    assert middle.reason(0) == "train"


def test_purged_kfold_embargo_as_a_fraction() -> None:
    kfold = PurgedKFold(n_splits=4, embargo=0.05)
    assert kfold.embargo_periods(100) == 5
    assert PurgedKFold(embargo=0.07).embargo_periods(100) == 7
    assert PurgedKFold(embargo=0.001).embargo_periods(100) == 1
    first = next(iter(kfold.split(100)))
    assert first.embargoed.tolist() == [25, 26, 27, 28, 29]


def test_purged_kfold_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="fraction"):
        PurgedKFold(3, embargo=1.5)
    with pytest.raises(ValueError, match="folds"):
        list(PurgedKFold(5).split(3))
    with pytest.raises(ValueError, match="label ends before"):
        list(PurgedKFold(2).split(np.arange(4), np.array([0, 1, 1, 3])))


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(6, 70),
    data=st.data(),
    n_splits=st.integers(2, 6),
    embargo=st.integers(0, 5) | st.floats(0.0, 0.3),
    panel=st.booleans(),
)
def test_purged_kfold_no_train_label_overlaps_test_and_embargo_holds(
    n: int, data: st.DataObject, n_splits: int, embargo: int | float, panel: bool
) -> None:
    high = n // 2 if panel else 10 * n
    times = np.array(data.draw(st.lists(st.integers(0, high), min_size=n, max_size=n)))
    if np.unique(times).size < n_splits:
        return
    lengths = np.array(data.draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)))
    ends = times + lengths
    periods = np.unique(times)
    kfold = PurgedKFold(n_splits, embargo)
    gap = kfold.embargo_periods(periods.size)
    splits = list(kfold.split(times, ends))
    assert np.sort(np.concatenate([split.test for split in splits])).tolist() == list(range(n))
    for split in splits:
        _assert_partition(split, n)
        assert split.train.size + split.test.size + split.purged.size + split.embargoed.size == n
        assert _overlapping_pairs(split, split.train, split.test) == []
        last_label = ends[split.test].max()
        for i in split.train:
            if times[i] > last_label:
                periods_between = np.count_nonzero((periods > last_label) & (periods <= times[i]))
                assert periods_between > gap, f"train sample {i} starts inside the embargo"
        for i, j in zip(split.purged, split.purged_by, strict=True):
            assert _overlapping_pairs(split, np.array([i]), np.array([j])) == [(i, j)]
            assert split.reason(int(j)) == "test"
        for i in split.embargoed:
            assert 0 < np.count_nonzero((periods > last_label) & (periods <= times[i])) <= gap
            assert "embargo" in split.explain(int(i))
