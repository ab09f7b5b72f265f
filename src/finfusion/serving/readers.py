"""Reads of the served lake tables for the API: weights snapshots (cached on the committed files) and forecasts.

Paths are built only from names already checked against the lake's name rules, then resolved and required to lie
under the lake root (a symbolic link pointing elsewhere is refused too).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from finfusion.data.lake import Lake
from finfusion.data.schema import FORECASTS
from finfusion.errors import LakeError

#: (year, committed file) of every year of a dataset: a commit that replaces a year's file names a new one.
Signature = tuple[tuple[int, Path], ...]


def inside(root: Path, path: Path) -> Path:
    """`path` resolved; raises LakeError (naming only its last part) unless it lies under `root` (resolved)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise LakeError(f"'{path.name}' leads outside the lake root")
    return resolved


@dataclass(frozen=True)
class Snapshot:
    """The weights of one decision instant: rows [symbol, weight, model_version] sorted by symbol."""

    ts: datetime
    rows: pl.DataFrame


class WeightsReader:
    """Snapshots of a WEIGHTS dataset. Year files are read once and kept (up to `max_files`) until they change."""

    def __init__(self, lake: Lake, dataset: str, *, max_files: int = 8) -> None:
        self.lake = lake
        self.dataset = dataset
        self.max_files = max_files
        self._frames: OrderedDict[int, tuple[tuple[int, Path], pl.DataFrame]] = OrderedDict()
        self._lock = threading.Lock()

    def signature(self) -> Signature:
        """The dataset's committed year files as (year, path), by year; () when there are none."""
        found = []
        for path in self.lake.files("weights", self.dataset):
            name = path.parent.name
            if name.startswith("year=") and name[5:].isdigit():
                found.append((int(name[5:]), path))
        return tuple(sorted(found))

    def latest(self, signature: Signature | None = None) -> Snapshot | None:
        """The weights of the last decision instant (None without weights)."""
        for key in reversed(signature if signature is not None else self.signature()):
            frame = self._frame(key)
            if frame.height:
                return _snapshot(frame, frame.height)
        return None

    def at(self, instant: datetime) -> Snapshot | None:
        """The weights of the last decision instant at or before `instant` (None when there is none)."""
        for key in reversed(self.signature()):
            if key[0] > instant.year:
                continue
            frame = self._frame(key)
            end = frame["ts"].search_sorted(instant, side="right")
            if end:
                return _snapshot(frame, end)
        return None

    def _frame(self, key: tuple[int, Path]) -> pl.DataFrame:
        year = key[0]
        with self._lock:
            cached = self._frames.get(year)
            if cached is not None and cached[0] == key:
                self._frames.move_to_end(year)
                return cached[1]
        path = inside(self.lake.root, key[1])
        frame = pl.read_parquet(path, columns=["ts", "symbol", "weight", "model_version"]).sort("ts", "symbol")
        with self._lock:
            self._frames[year] = (key, frame)
            self._frames.move_to_end(year)
            while len(self._frames) > self.max_files:
                self._frames.popitem(last=False)
        return frame


def _snapshot(frame: pl.DataFrame, end: int) -> Snapshot:
    """The rows of the decision instant of row end - 1 of `frame` (sorted by ts)."""
    ts = frame["ts"][end - 1]
    start = frame["ts"].search_sorted(ts, side="left")
    return Snapshot(ts=ts, rows=frame.slice(start, end - start).drop("ts"))


@dataclass(frozen=True)
class ForecastPage:
    """Forecast rows [FORECASTS columns but symbol, plus extras] of one symbol; `truncated`: more matched."""

    rows: pl.DataFrame
    extra_columns: list[str]
    truncated: bool


def read_forecasts(
    lake: Lake, dataset: str, symbol: str, start: datetime | None, end: datetime | None, limit: int
) -> ForecastPage:
    """Up to `limit` forecasts of `symbol` with start <= origin_ts <= end, by (origin_ts, step, target).

    `dataset` and `symbol` must already satisfy the lake's name rules. Raises LakeError when the dataset or the
    symbol has no forecasts.
    """
    base = lake.dataset_dir("forecasts", dataset)
    committed = lake.files("forecasts", dataset)
    if not committed:
        raise LakeError(f"no forecasts dataset '{dataset}'")
    files = [path for path in committed if path.relative_to(base).parts[0] == f"symbol={symbol}"]
    if not files:
        raise LakeError(f"no forecasts of symbol '{symbol}' in dataset '{dataset}'")
    scan = pl.scan_parquet([inside(lake.root, f) for f in files], hive_partitioning=False)
    if start is not None:
        scan = scan.filter(pl.col("origin_ts") >= start)
    if end is not None:
        scan = scan.filter(pl.col("origin_ts") <= end)
    frame = scan.sort("origin_ts", "step", "target").head(limit + 1).collect()
    extra = [c for c in frame.columns if c not in FORECASTS.names]
    return ForecastPage(rows=frame.head(limit), extra_columns=extra, truncated=frame.height > limit)
