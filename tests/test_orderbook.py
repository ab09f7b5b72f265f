"""Order-book samples and TransLOB (issue 19, part 5): causal convolutions, windows and labels that never see later
events, the planted effect present in the synthetic book, and the block bootstrap."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import torch

from finfusion.data.sources.lobster import read_lobster
from finfusion.data.sources.synthetic_lob import LobConfig, write_lobster_days
from finfusion.evaluation.classification import block_bootstrap_f1
from finfusion.models.orderbook.translob import TransLOB
from finfusion.samples.orderbook import book_days, book_labels, decisions, fit_book_state, normalized


def book(tmp_path: Path, config: LobConfig, days: int = 2) -> pl.DataFrame:
    written = write_lobster_days(tmp_path, "SYNL", [date(2024, 1, 2 + d) for d in range(days)], config)
    return pl.concat([read_lobster(day) for day in written])


def test_translob_is_causal_in_time() -> None:
    torch.manual_seed(0)
    model = TransLOB(levels=3, window=16).eval()
    x = torch.randn(2, 16, 3, 4)
    later = x.clone()
    later[:, 10:] += torch.randn(2, 6, 3, 4)
    # the convolution features at event t read events at or before t only
    torch.testing.assert_close(model.features(x)[:, :10], model.features(later)[:, :10])
    assert model({"book": x})["logits"].shape == (2, 3)


def test_windows_and_labels_never_see_later_events(tmp_path: Path) -> None:
    rows = book(tmp_path / "a", LobConfig(levels=3, events=800, seed=1))
    cut = rows["ts"][900]
    late = pl.col("ts") > cut
    changed = rows.with_columns(
        pl.when(late).then(pl.col("ask_size").list.eval(pl.element() * 3)).otherwise("ask_size")
    )
    results = []
    for version in (rows, changed):
        days = book_days(version, 3, ["SYNL"])
        at, change = decisions(days, window=20, horizon=5, stride=5)
        results.append((days, at, change))
    (days_a, at_a, change_a), (days_b, _, change_b) = results
    cut_us = int(days_a.ts_us[900])
    seen = days_a.ts_us <= cut_us
    np.testing.assert_array_equal(days_a.features[seen], days_b.features[seen])
    assert not np.array_equal(days_a.features[~seen], days_b.features[~seen])
    # prices did not change: the mid labels are the same; the statistics fitted before the cut are too
    np.testing.assert_array_equal(np.nan_to_num(change_a), np.nan_to_num(change_b))
    train = np.isfinite(change_a) & (days_a.ts_us[at_a] < cut_us - 10**6)
    state_a = fit_book_state(days_a, change_a, train, cut_us, 0.33)
    state_b = fit_book_state(days_b, change_b, train, cut_us, 0.33)
    assert state_a == state_b
    assert normalized(days_a, state_a).shape == (len(days_a.ts_us), 3, 4)
    labels = book_labels(change_a, state_a["alpha"])
    assert set(np.unique(labels)) <= {-1, 0, 1, 2} and (labels[~np.isfinite(change_a)] == -1).all()
    # windows stay within their day: the first decision of day 2 has a full window of day 2
    day_two = np.flatnonzero(days_a.day == 1)[0]
    assert at_a[at_a >= day_two][0] == day_two + 19


def test_the_planted_effect_shows_in_the_book_and_vanishes_without_it(tmp_path: Path) -> None:
    def imbalance_link(effect: float) -> float:
        rows = book(tmp_path / f"e{effect}", LobConfig(levels=3, events=6000, effect=effect, seed=2), days=1)
        days = book_days(rows, 3, ["SYNL"])
        at, change = decisions(days, window=50, horizon=20, stride=5)
        sizes = np.exp(days.features[:, 0, 3]) - np.exp(days.features[:, 0, 1])  # best bid minus best ask size
        known = np.isfinite(change)
        return float(np.corrcoef(sizes[at][known], change[known])[0, 1])

    assert imbalance_link(3.0) > 0.1 and abs(imbalance_link(0.0)) < 0.1


def test_the_block_bootstrap_tells_a_better_classifier_from_a_worse_one() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    good = np.where(rng.random(600) < 0.7, labels, rng.integers(0, 3, 600))
    bad = np.where(rng.random(600) < 0.4, labels, rng.integers(0, 3, 600))
    assert block_bootstrap_f1(labels, good, bad, 200, 10)["p_value"] < 0.05
    assert block_bootstrap_f1(labels, bad, good, 200, 10)["p_value"] > 0.9
