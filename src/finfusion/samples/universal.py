"""The iterative per-asset dataset builder of seed 003, and the windows it writes.

Pre-training a universal forecaster reads every asset of a lake dataset; holding them all at once does not scale.
The builder walks the assets in batches (`batch_assets`, 10 by default), scanning only that batch's partitions
lazily (the span filter reaches the files):

1. pass 1, per batch: each asset's one-bar log return, added into a running sum and count per bar instant, so the
   cross-asset market return (the equal-weight mean over the universe) is known with memory of one row per instant;
2. pass 2, per batch: the bar features of the batch's assets (features/bars.py, the one feature pipeline), the
   market return joined as of each bar and the excess return; each asset's frame is written to a temporary file,
   then the batch's windows are cut from those files into one shard and the temporary files are removed.

Each variate of a window: the target `ret_1` (log return of the close) and the covariates, by default the other
OHLCV columns (gap, body, range, volume z-score), technical indicators (RSI, MACD histogram, ATR, Bollinger %B),
cross-asset features (market return, excess return) and market-regime indicators (realised volatility, its
z-score, the 60-bar trend). Every value is computed from bars at or before its own instant; the market return at t
averages returns at t, known at t's close. Values are raw (Moirai standardises each variate of each window itself);
a window starts once every covariate is past its warm-up, so no value in a window is missing unless its bar is.

A shard is a folder of .npy arrays (read memory-mapped, never unpickled): `past` [n, L, C] float32, `past_mask`
[n, L], `future` [n, H, 1], `future_mask` [n, H], `symbol_index` [n], `origin_us` [n], `target_us` [n, H] (-1 where
the bar does not exist). `index.json` lists the shards, the symbols and the columns. Memory stays that of one batch
however many assets the lake holds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError

TARGET = "ret_1"
MARKET = "market_ret_1"
EXCESS = "excess_ret_1"
#: Seed 003's covariates: OHLCV, technical, cross-asset and regime columns.
DEFAULT_COVARIATES = (
    "gap",
    "body",
    "range_hl",
    "volume_z_20",
    "rsi_14",
    "macd_hist",
    "atr_14",
    "bb_pos_20",
    MARKET,
    EXCESS,
    "rv_20",
    "rv_z_20",
    "ma_ratio_60",
)
INDEX_FILE = "index.json"
#: The windows' rules; part of a build's cache key, so a change of them never reuses an older build.
BUILD_VERSION = 2
ARRAYS = ("past", "past_mask", "future", "future_mask", "symbol_index", "origin_us", "target_us")
#: The arrays a sample carries (`target_us` is for the forecasts' layout only).
SAMPLE_ARRAYS = ARRAYS[:-1]


@dataclass(frozen=True)
class BuilderConfig:
    """What to build: `dataset` bars at `freq` from the lake at `lake`, the assets `symbols` (None: all) over
    [start, end) (ISO dates, None: open), windows of `lookback` + `horizon` bars every `stride` bars."""

    lake: str
    dataset: str
    freq: str = "1d"
    symbols: tuple[str, ...] | None = None
    start: str | None = None
    end: str | None = None
    lookback: int = 64
    horizon: int = 8
    stride: int = 1
    batch_assets: int = 10
    covariates: tuple[str, ...] = DEFAULT_COVARIATES
    min_history: int | None = None

    def __post_init__(self) -> None:
        if self.lookback < 1 or self.horizon < 1 or self.stride < 1 or self.batch_assets < 1:
            raise FinfusionError("universal data: lookback, horizon, stride and batch_assets must be at least 1")

    @property
    def columns(self) -> tuple[str, ...]:
        return (TARGET, *self.covariates)


@dataclass
class ShardIndex:
    """The shards of one build: their folders, the symbols (symbol_index order) and the columns [C]."""

    root: Path
    shards: list[str]
    symbols: list[str]
    columns: list[str]
    counts: list[int] = field(default_factory=list)

    def write(self) -> None:
        payload = {"shards": self.shards, "symbols": self.symbols, "columns": self.columns, "counts": self.counts}
        (self.root / INDEX_FILE).write_text(json.dumps(payload) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, root: Path) -> ShardIndex:
        path = root / INDEX_FILE
        if not path.is_file():
            raise FinfusionError(f"{root}: no {INDEX_FILE} (not a finished universal dataset build)")
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(root, list(raw["shards"]), list(raw["symbols"]), list(raw["columns"]), list(raw["counts"]))


def universe(lake: Lake, config: BuilderConfig) -> list[str]:
    """The assets to build, sorted: `symbols`, or every symbol of the dataset."""
    stored = lake.symbols("bars", config.dataset, config.freq)
    if not stored:
        raise FinfusionError(f"no bars dataset '{config.dataset}' at {config.freq} in {lake.root}")
    if config.symbols is None:
        return stored
    missing = sorted(set(config.symbols) - set(stored))
    if missing:
        raise FinfusionError(f"universal data: symbol '{missing[0]}' is not in bars dataset '{config.dataset}'")
    return sorted(config.symbols)


def batches(symbols: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(symbols), size):
        yield list(symbols[start : start + size])


def _bars(lake: Lake, config: BuilderConfig, symbols: list[str]) -> pl.DataFrame:
    """The bars of `symbols` in [start, end): a lazy scan of their partitions, the span filter pushed to the files."""
    bars = lake.scan("bars", config.dataset, freq=config.freq, symbols=symbols)
    if config.start is not None:
        bars = bars.filter(pl.col("ts") >= pl.lit(config.start).str.to_datetime(time_zone="UTC"))
    if config.end is not None:
        bars = bars.filter(pl.col("ts") < pl.lit(config.end).str.to_datetime(time_zone="UTC"))
    return bars.sort("symbol", "ts").collect()


def batch_returns(config: BuilderConfig, batch: list[str]) -> pl.DataFrame:
    """[ts, sum, count]: the sum and number of the batch's one-bar log returns at each instant (pass 1, one batch)."""
    bars = _bars(Lake(config.lake), config, batch)
    close = pl.col("close") * pl.col("adj_factor").fill_null(1.0) if "adj_factor" in bars.columns else pl.col("close")
    return (
        bars.with_columns((close.log() - close.log().shift(1).over("symbol")).alias("r"))
        .drop_nulls("r")
        .group_by("ts")
        .agg(pl.col("r").sum().alias("sum"), pl.len().alias("count"))
    )


def market_returns(parts: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """[ts, market_ret_1]: the mean one-bar log return over the assets that have one at each instant, from the
    batches' sums, added one batch at a time (memory: one row per instant)."""
    total: pl.DataFrame | None = None
    for step in parts:
        total = step if total is None else pl.concat([total, step]).group_by("ts").agg(pl.col("sum", "count").sum())
    if total is None:
        raise FinfusionError("universal data: no assets")
    return total.select("ts", (pl.col("sum") / pl.col("count")).alias(MARKET)).sort("ts")


def asset_features(bars: pl.DataFrame, market: pl.DataFrame, config: BuilderConfig) -> pl.DataFrame:
    """[symbol, ts, columns...] of the batch's bars: bar features, the market return as of each bar, the excess."""
    from finfusion.features.bars import build_features

    features = build_features(bars)
    joined = features.join(market, on="ts", how="left").with_columns((pl.col(TARGET) - pl.col(MARKET)).alias(EXCESS))
    unknown = [c for c in config.columns if c not in joined.columns]
    if unknown:
        raise FinfusionError(f"universal data: unknown covariate '{unknown[0]}' (bar feature columns or {MARKET})")
    return joined.select("symbol", "ts", *config.columns)


def asset_windows(frame: pl.DataFrame, symbol_index: int, config: BuilderConfig) -> dict[str, np.ndarray]:
    """Windows of one asset's frame [n bars] every `stride` bars, from the first with `min_history` bars of history
    after the first bar (default: a full lookback), whose target is observed at every future step and whose past
    bars hold every column (no covariate still in its warm-up): arrays of the shard layout (module docstring)."""
    values = frame.select(config.columns).to_numpy().astype(np.float32)  # [n, C] (null -> NaN)
    ts = frame["ts"].dt.epoch("us").to_numpy()
    n, lookback, horizon = len(ts), config.lookback, config.horizon
    first = config.min_history or lookback  # origin index: the past starts at bar 1, whose return exists
    origins = np.arange(first, n - horizon, config.stride)
    if len(origins):
        ahead = origins[:, None] + 1 + np.arange(horizon)
        before = origins[:, None] - np.arange(lookback)[::-1]
        complete = (np.isfinite(values[np.clip(before, 0, None)]).all(axis=2) | (before < 0)).all(axis=1)
        origins = origins[np.isfinite(values[ahead, 0]).all(axis=1) & complete]
    count = len(origins)
    past = np.full((count, lookback, values.shape[1]), np.nan, dtype=np.float32)
    past_mask = np.zeros((count, lookback), dtype=bool)
    for row, origin in enumerate(origins):
        start = max(0, origin - lookback + 1)
        past[row, lookback - (origin + 1 - start) :] = values[start : origin + 1]
        past_mask[row, lookback - (origin + 1 - start) :] = True
    ahead = origins[:, None] + 1 + np.arange(horizon)
    return {
        "past": past,
        "past_mask": past_mask,
        "future": values[ahead, :1] if count else np.zeros((0, horizon, 1), np.float32),
        "future_mask": np.ones((count, horizon), dtype=bool),
        "symbol_index": np.full(count, symbol_index, dtype=np.int64),
        "origin_us": ts[origins].astype(np.int64),
        "target_us": ts[ahead].astype(np.int64) if count else np.zeros((0, horizon), np.int64),
    }


def write_batch(
    config: BuilderConfig, market: pl.DataFrame, batch: list[str], number: int, out: Path, position: dict[str, int]
) -> int:
    """Pass 2 for one batch: features of its assets, each written to a temporary file, then cut into the windows of
    shard `part-{number}` under `out`; the temporary files are removed. Returns the shard's window count."""
    temporary = out / f"_tmp-{number:05d}"
    temporary.mkdir()
    features = asset_features(_bars(Lake(config.lake), config, batch), market, config)
    for symbol, frame in features.partition_by("symbol", as_dict=True, maintain_order=True).items():
        frame.write_parquet(temporary / f"{symbol[0]}.parquet")
    del features
    parts = [
        asset_windows(pl.read_parquet(temporary / f"{symbol}.parquet"), position[symbol], config)
        for symbol in batch
        if (temporary / f"{symbol}.parquet").is_file()
    ]
    shard = out / f"part-{number:05d}"
    shard.mkdir()
    for name in ARRAYS:
        np.save(shard / f"{name}.npy", np.concatenate([part[name] for part in parts]), allow_pickle=False)
    shutil.rmtree(temporary)
    return int(sum(len(part["origin_us"]) for part in parts))


def build_shards(config: BuilderConfig, out: Path, engine: str = "local") -> ShardIndex:
    """Build the windows of every asset into shards under `out` (replaced if present), a batch at a time: in this
    process (`local`), or each batch's steps as Ray Data tasks (`ray`, the optional extra: on the cluster
    `ray.init()` connects to, else a local one), for lakes past one machine. Both give the same shards."""
    lake = Lake(config.lake)
    symbols = universe(lake, config)
    groups = list(batches(symbols, config.batch_assets))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    position = {symbol: i for i, symbol in enumerate(symbols)}
    if engine == "local":
        market = market_returns(batch_returns(config, batch) for batch in groups)
        counts = [write_batch(config, market, batch, k, out, position) for k, batch in enumerate(groups)]
    elif engine == "ray":
        from finfusion.samples.universal_ray import ray_counts

        counts = ray_counts(config, groups, out, position)
    else:
        raise FinfusionError(f"universal data: engine must be 'local' or 'ray', got {engine!r}")
    index = ShardIndex(out, [f"part-{k:05d}" for k in range(len(groups))], symbols, list(config.columns), counts)
    index.write()
    return index


class ShardWindows:
    """The windows of a build (or a subset of them, `rows` into the concatenation of all shards) as sample dicts of
    the forecast contract; shards are read memory-mapped, so memory does not grow with the number of windows."""

    def __init__(self, index: ShardIndex, rows: np.ndarray | None = None) -> None:
        self.index = index
        self.offsets = np.concatenate([[0], np.cumsum(index.counts)]).astype(np.int64)
        self.rows = np.arange(self.offsets[-1]) if rows is None else np.asarray(rows, dtype=np.int64)
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def array(self, shard: int, name: str) -> np.ndarray:
        key = (shard, name)
        if key not in self._arrays:
            path = self.index.root / self.index.shards[shard] / f"{name}.npy"
            self._arrays[key] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._arrays[key]

    def column(self, name: str) -> np.ndarray:
        """One per-window array [N, ...] of this subset, in row order."""
        parts = [np.asarray(self.array(s, name)) for s in range(len(self.index.shards))]
        full = np.concatenate(parts) if parts else np.zeros(0)
        return full[self.rows]

    def subset(self, mask: np.ndarray) -> ShardWindows:
        return ShardWindows(self.index, self.rows[mask])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, object]:
        import torch

        row = int(self.rows[i])
        shard = int(np.searchsorted(self.offsets, row, side="right") - 1)
        local = row - int(self.offsets[shard])
        return {name: torch.from_numpy(np.array(self.array(shard, name)[local])) for name in SAMPLE_ARRAYS}
