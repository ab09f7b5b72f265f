"""Order-book windows and mid-price movement labels (seed 001, the microstructure module).

A sample at event t of a symbol's day: `book` [T, L, 4], the last T snapshots up to and including t, each level's
(ask price, ask size, bid price, bid size); prices as basis points from the snapshot's mid price and sizes as
log(1 + size), both z-scored per (level, field) with the training span's statistics; an empty level is 0 (the
training mean). Windows never cross a day.

Label over the next k events (smoothed, with a dead band; Zhang et al., DeepLOB): l = (mean(mid[t+1 .. t+k]) -
mid[t]) / mid[t]; 2 (up) when l > alpha, 0 (down) when l < -alpha, 1 (stationary) otherwise, alpha the
`stationary_share` quantile of |l| over the training samples (a third of them stationary by default). A sample
whose k events are not there yet gets -1 (predicted, never scored). Only the label reads events after t; the
statistics and alpha are fitted on training samples only. Splits in time (instants): training samples end their
label before `train_end`, validation samples start at `train_end` and end it before `val_end`, test samples start
at `val_end`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from finfusion.data.calendar import to_us
from finfusion.errors import FinfusionError
from finfusion.samples.contract import BOOK, IGNORE_LABEL, LABEL, ORIGIN_US, SYMBOL_INDEX

ORDERBOOK_DEFAULTS: dict[str, Any] = {
    "source": "lake",
    "dataset": "lob_synthetic",
    "lake": None,
    "symbols": None,
    "levels": 10,
    "window": 100,
    "horizon": 20,
    "stride": 10,
    "stationary_share": 0.33,
    "split": {"train": 0.6, "val": 0.2},
    "batch_size": 64,
    "num_workers": 0,
    "synthetic": {"days": 10, "events": 20_000, "effect": 2.0, "seed": 0},
}


@dataclass
class BookDays:
    """All snapshots, day after day: `features` [M, L, 4] raw (bps from mid, log sizes; NaN at empty levels), `mid`
    [M], `ts_us` [M], `day` [M] (a running number per symbol-day), `symbol_index` [M]."""

    features: np.ndarray
    mid: np.ndarray
    ts_us: np.ndarray
    day: np.ndarray
    symbol_index: np.ndarray
    symbols: tuple[str, ...]


def book_days(rows: pl.DataFrame, levels: int, symbols: list[str]) -> BookDays:
    """The snapshots of `rows` (the orderbooks table) as arrays (see `BookDays`)."""
    rows = rows.filter(pl.col("symbol").is_in(symbols)).sort("symbol", "ts", "event")
    if rows.height == 0:
        raise FinfusionError("the orderbooks dataset has no rows for the requested symbols")
    width = int(rows["ask_price"].list.len().min())
    if width < levels:
        raise FinfusionError(f"data.levels: the book has {width} levels, {levels} asked")
    sides = [
        np.array(rows[name].list.head(levels).to_list(), dtype=np.float64)
        for name in ("ask_price", "ask_size", "bid_price", "bid_size")
    ]
    mid = (sides[0][:, 0] + sides[2][:, 0]) / 2
    if not np.isfinite(mid).all():
        raise FinfusionError("a snapshot has an empty best level on one side: its mid price is undefined")
    features = np.stack(
        [(sides[0] / mid[:, None] - 1) * 1e4, np.log1p(sides[1]), (sides[2] / mid[:, None] - 1) * 1e4,
         np.log1p(sides[3])], axis=-1,
    )  # fmt: skip
    ts = to_us(rows["ts"])
    date_key = rows.select((pl.col("symbol") + pl.col("ts").dt.date().cast(pl.String)).alias("k"))["k"]
    day = np.unique(date_key.to_numpy(), return_inverse=True)[1]
    index = np.array([symbols.index(s) for s in rows["symbol"].to_list()], dtype=np.int64)
    return BookDays(features, mid, ts, day.astype(np.int64), index, tuple(symbols))


def decisions(days: BookDays, window: int, horizon: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions [N] of the decision events (a full window within their day, every `stride` events) and the smoothed
    relative mid change l [N] over the next `horizon` events of the same day (NaN when they are not all there)."""
    starts = np.flatnonzero(np.diff(days.day, prepend=-1))
    ends = np.append(starts[1:], len(days.day))
    at, change = [], []
    for start, end in zip(starts, ends, strict=True):
        positions = np.arange(start + window - 1, end, stride)
        cum = np.concatenate([[0.0], np.cumsum(days.mid[start:end])])
        local = positions - start
        known = local + horizon < end - start
        safe = np.minimum(local, end - start - horizon - 1)
        future = (cum[safe + horizon + 1] - cum[safe + 1]) / horizon
        change.append(np.where(known, future / days.mid[positions] - 1, np.nan))
        at.append(positions)
    return np.concatenate(at), np.concatenate(change)


def fit_book_state(
    days: BookDays, change: np.ndarray, train: np.ndarray, train_end_us: int, share: float
) -> dict[str, Any]:
    """The z-score statistics per (level, field) over the snapshots before `train_end_us`, and alpha from the
    training samples' changes (module docstring)."""
    if not train.any():
        raise FinfusionError("the split leaves no training samples (each needs its label before train_end)")
    seen = days.features[days.ts_us < train_end_us]
    mean, std = np.nanmean(seen, axis=0), np.nanstd(seen, axis=0)
    return {
        "mean": mean.tolist(),
        "std": np.where(std > 0, std, 1.0).tolist(),
        "alpha": float(np.quantile(np.abs(change[train]), share)),
    }


def book_labels(change: np.ndarray, alpha: float) -> np.ndarray:
    """2 up, 1 stationary, 0 down, -1 unknown."""
    label = np.where(change > alpha, 2, np.where(change < -alpha, 0, 1))
    return np.where(np.isfinite(change), label, IGNORE_LABEL).astype(np.int64)


class BookWindows(Dataset[dict[str, torch.Tensor]]):
    """Samples `book` [T, L, 4], `label`, `symbol_index`, `origin_us` at the decision positions `at`."""

    def __init__(self, normalized: np.ndarray, days: BookDays, at: np.ndarray, label: np.ndarray, window: int) -> None:
        self.normalized, self.days, self.at, self.label, self.window = normalized, days, at, label, window

    def __len__(self) -> int:
        return len(self.at)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = int(self.at[i])
        return {
            BOOK: torch.from_numpy(self.normalized[t - self.window + 1 : t + 1]),
            LABEL: torch.tensor(self.label[i], dtype=torch.int64),
            SYMBOL_INDEX: torch.tensor(self.days.symbol_index[t], dtype=torch.int64),
            ORIGIN_US: torch.tensor(self.days.ts_us[t], dtype=torch.int64),
        }

    def subset(self, mask: np.ndarray) -> BookWindows:
        return BookWindows(self.normalized, self.days, self.at[mask], self.label[mask], self.window)


def normalized(days: BookDays, state: Mapping[str, Any]) -> np.ndarray:
    """[M, L, 4] float32: z-scored features, 0 at empty levels."""
    z = (days.features - np.asarray(state["mean"])) / np.asarray(state["std"])
    return np.nan_to_num(z).astype(np.float32)
