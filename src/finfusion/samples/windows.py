"""Sliding windows over each symbol's bars: the `past` / `future` samples of the contract (see contract.py).

A window is one symbol's bars only (it never crosses symbols) and is named by its decision bar, at position i of
that symbol's bars: `past` holds the input columns of bars i - L + 1 .. i, `future` the target columns of bars
i + 1 .. i + H. Decision bars advance by `stride` bars (counted from each symbol's first eligible bar).

Columns. `log_return` (the log return of the adjusted close over one bar; adj_close, else close * adj_factor, else
close) is always available; every feature column of the `features` frame given to `build_panel` is too.

Normalisation. Each input and target column is z-scored per symbol with statistics fitted ONLY on the bars with
ts < `train_end`: exactly the bars that windows whose whole future ends before `train_end` can contain, so nothing at
or after `train_end` reaches them. Symbols (or columns) without values in that span use the statistics pooled over
all symbols; a missing or zero scale counts as 1. The fitted `FittedNormalizer` is kept on the dataset and passed to
the validation and test datasets (`split` shares it), which never refit.

Missing values (feature warm-up, missing returns) become 0 after normalisation (the training mean); `past_mask` is
False only on left padding (when `min_history` < L lets windows start with fewer than L bars); `future_mask` is False
where a target bar does not exist or its value is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from finfusion.data.calendar import to_us
from finfusion.errors import FinfusionError
from finfusion.features.normalize import FittedNormalizer, utc_instant
from finfusion.samples.contract import (
    FUTURE,
    FUTURE_MASK,
    ORIGIN_US,
    PAST,
    PAST_MASK,
    SCALE_LOC,
    SCALE_SCALE,
    SYMBOL_INDEX,
)

LOG_RETURN = "log_return"
Instant = datetime | date | str
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class WindowConfig:
    """Lookback L, horizon H, stride, input columns C, target columns T and the end of the training span."""

    lookback: int
    horizon: int
    stride: int = 1
    inputs: tuple[str, ...] = (LOG_RETURN,)
    targets: tuple[str, ...] = (LOG_RETURN,)
    #: Normaliser statistics use only bars with ts < train_end (required unless a fitted normaliser is given).
    train_end: Instant | None = None
    normalize: bool = True
    #: Fewest real bars in `past` (default L: full windows only); fewer are left-padded with past_mask False.
    min_history: int | None = None
    #: Only windows with all H future bars (training); False also keeps the last bars (forecasting).
    require_future: bool = True

    def __post_init__(self) -> None:
        if self.lookback < 1 or self.horizon < 1 or self.stride < 1:
            raise FinfusionError("window config: lookback, horizon and stride must be at least 1")
        if not self.inputs or not self.targets:
            raise FinfusionError("window config: needs at least one input and one target column")
        if self.min_history is not None and not 1 <= self.min_history <= self.lookback:
            raise FinfusionError(f"window config: min_history must be in 1 .. lookback ({self.lookback})")

    @property
    def history(self) -> int:
        return self.lookback if self.min_history is None else self.min_history


@dataclass(frozen=True)
class Panel:
    """Bars (and features) of S symbols as per-symbol arrays, each symbol's bars in time order.

    `ts[s]` [n_s] int64 UTC microseconds; `values[s]` [n_s, K] float64 (NaN where missing), columns `columns` [K].
    `frame` is the same data as one polars frame [symbol, ts, columns], sorted by (symbol, ts).
    """

    symbols: tuple[str, ...]
    columns: tuple[str, ...]
    ts: list[np.ndarray]
    values: list[np.ndarray]
    frame: pl.DataFrame = field(repr=False)

    def column_index(self, names: Sequence[str]) -> np.ndarray:
        """Positions [len(names)] of `names` among `columns`; raises FinfusionError on an unknown one."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise FinfusionError(f"panel lacks column(s) {', '.join(missing)}; it has {', '.join(self.columns)}")
        return np.array([self.columns.index(n) for n in names], dtype=np.int64)


def build_panel(bars: pl.DataFrame, features: pl.DataFrame | None = None) -> Panel:
    """Per-symbol arrays of `log_return` and every column of `features` [symbol, ts, ...] (joined on symbol, ts)."""
    if "symbol" not in bars.columns or "ts" not in bars.columns or "close" not in bars.columns:
        raise FinfusionError("bars need symbol, ts and close columns")
    frame = bars.sort("symbol", "ts").select("symbol", "ts", _log_return(bars).alias(LOG_RETURN))
    if frame.select(pl.struct("symbol", "ts").is_duplicated().any()).item():
        raise FinfusionError("bars hold two rows of one symbol at the same ts")
    if features is not None:
        extra = [c for c in features.columns if c not in ("symbol", "ts", LOG_RETURN)]
        frame = frame.join(features.select("symbol", "ts", *extra), on=["symbol", "ts"], how="left")
    columns = tuple(c for c in frame.columns if c not in ("symbol", "ts"))
    frame = frame.with_columns(pl.col(columns).cast(pl.Float64).fill_null(float("nan")))
    symbols = tuple(frame["symbol"].unique(maintain_order=True).to_list())
    counts = frame.group_by("symbol", maintain_order=True).len()["len"].to_numpy()
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ts_all = to_us(frame["ts"])
    values_all = frame.select(columns).to_numpy().astype(np.float64)
    ts = [ts_all[bounds[i] : bounds[i + 1]] for i in range(len(symbols))]
    values = [values_all[bounds[i] : bounds[i + 1]] for i in range(len(symbols))]
    return Panel(symbols, columns, ts, values, frame)


def _log_return(bars: pl.DataFrame) -> pl.Expr:
    """Log return of the adjusted close over one bar, per symbol (null on a symbol's first bar)."""
    close = pl.col("close")
    factor = pl.col("adj_factor").fill_null(1.0) if "adj_factor" in bars.columns else pl.lit(1.0)
    adjusted = close * factor
    if "adj_close" in bars.columns:
        adjusted = pl.col("adj_close").fill_null(adjusted)
    log_price = adjusted.log()
    return (log_price - log_price.shift(1)).over("symbol")


def fit_normalizer(panel: Panel, columns: Sequence[str], train_end: Instant) -> FittedNormalizer:
    """Per-symbol z-score statistics of `columns` from the bars with ts < `train_end` (see the module docstring)."""
    start = panel.frame["ts"].min()
    if start is None:
        raise FinfusionError("cannot fit a normaliser on an empty panel")
    if utc_instant(train_end) <= start:
        raise FinfusionError(f"train_end {train_end} is not after the first bar ({start}): no training span")
    return FittedNormalizer.fit(panel.frame, "zscore", start, train_end, columns=list(dict.fromkeys(columns)))


def _stat_arrays(normalizer: FittedNormalizer | None, symbols: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """[2, S, len(columns)] (centre, scale) per symbol: its own, else pooled, else (0, 1)."""
    out = np.zeros((2, len(symbols), len(columns)))
    out[1] = 1.0
    if normalizer is None:
        return out
    for s, symbol in enumerate(symbols):
        own = normalizer.stats.get(symbol, {})
        for c, column in enumerate(columns):
            if column not in normalizer.columns:
                raise FinfusionError(f"the normaliser was not fitted on column '{column}'")
            centre, scale = own.get(column, (None, None))
            if centre is None:
                centre, scale = normalizer.pooled[column]
            if centre is not None and scale is not None:
                out[:, s, c] = centre, scale
    return out


class WindowDataset(Dataset[dict[str, torch.Tensor]]):
    """Windows of a panel, one per decision bar; item i is the contract dict of window i (shapes without B).

    `past` [L, C], `past_mask` [L], `future` [H, T], `future_mask` [H], `symbol_index` [], `origin_us` [],
    `scale_loc` / `scale_scale` [1, T]. `index` [M, 2] holds (symbol, decision-bar position) of each window.
    """

    def __init__(
        self,
        panel: Panel,
        config: WindowConfig,
        normalizer: FittedNormalizer | None = None,
        index: np.ndarray | None = None,
    ) -> None:
        self.panel = panel
        self.config = config
        self._inputs = panel.column_index(config.inputs)
        self._targets = panel.column_index(config.targets)
        if normalizer is None and config.normalize:
            if config.train_end is None:
                raise FinfusionError("window config: train_end is needed to fit the normaliser (or pass one)")
            normalizer = fit_normalizer(panel, [*config.inputs, *config.targets], config.train_end)
        self.normalizer = normalizer if config.normalize else None
        self._input_stats = _stat_arrays(self.normalizer, panel.symbols, config.inputs)  # [2, S, C]
        self._target_stats = _stat_arrays(self.normalizer, panel.symbols, config.targets)  # [2, S, T]
        self.index = self._all_windows() if index is None else index

    def _all_windows(self) -> np.ndarray:
        """(symbol, decision position) [M, 2] of every eligible window, symbol by symbol, in time order."""
        out = []
        horizon = self.config.horizon if self.config.require_future else 0
        for s, ts in enumerate(self.panel.ts):
            positions = np.arange(self.config.history - 1, len(ts) - horizon, self.config.stride)
            out.append(np.stack([np.full(len(positions), s), positions], axis=1))
        return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.panel.symbols

    @property
    def origins_us(self) -> np.ndarray:
        """Decision instants [M] int64 (UTC microseconds) of the windows."""
        return np.array([self.panel.ts[s][i] for s, i in self.index], dtype=np.int64)

    @property
    def future_end_us(self) -> np.ndarray:
        """Instant [M] of each window's last existing future bar (its origin when it has none): for purging."""
        h = self.config.horizon
        return np.array([self.panel.ts[s][min(i + h, len(self.panel.ts[s]) - 1)] for s, i in self.index])

    def subset(self, keep: np.ndarray) -> WindowDataset:
        """The windows selected by `keep` (a bool mask [M] or positions), sharing the panel and the normaliser."""
        return WindowDataset(self.panel, self.config, self.normalizer, self.index[keep])

    def split(self, start: Instant | None = None, end: Instant | None = None) -> WindowDataset:
        """Windows whose origin lies in [start, end) (either bound may be open), with this dataset's normaliser."""
        origins = self.origins_us
        keep = np.ones(len(origins), dtype=bool)
        if start is not None:
            keep &= origins >= _us(start)
        if end is not None:
            keep &= origins < _us(end)
        return self.subset(keep)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        s, i = (int(v) for v in self.index[item])
        values, ts = self.panel.values[s], self.panel.ts[s]
        lookback, horizon = self.config.lookback, self.config.horizon
        first = max(0, i - lookback + 1)
        past = np.zeros((lookback, len(self._inputs)))
        past_mask = np.zeros(lookback, dtype=bool)
        raw_past = values[first : i + 1][:, self._inputs]
        past[lookback - len(raw_past) :] = self._scaled(raw_past, self._input_stats[:, s])
        past_mask[lookback - len(raw_past) :] = True
        future = np.zeros((horizon, len(self._targets)))
        raw_future = values[i + 1 : i + 1 + horizon][:, self._targets]
        future[: len(raw_future)] = self._scaled(raw_future, self._target_stats[:, s])
        future_mask = np.zeros(horizon, dtype=bool)
        future_mask[: len(raw_future)] = np.isfinite(raw_future).all(axis=1)
        return {
            PAST: torch.from_numpy(past.astype(np.float32)),
            PAST_MASK: torch.from_numpy(past_mask),
            FUTURE: torch.from_numpy(future.astype(np.float32)),
            FUTURE_MASK: torch.from_numpy(future_mask),
            SYMBOL_INDEX: torch.tensor(s, dtype=torch.int64),
            ORIGIN_US: torch.tensor(int(ts[i]), dtype=torch.int64),
            SCALE_LOC: torch.from_numpy(self._target_stats[0, s][None, :].astype(np.float32)),
            SCALE_SCALE: torch.from_numpy(self._target_stats[1, s][None, :].astype(np.float32)),
        }

    @staticmethod
    def _scaled(raw: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """(raw [n, K] - centre [K]) / scale [K], with missing values as 0."""
        return np.nan_to_num((raw - stats[0]) / stats[1], nan=0.0, posinf=0.0, neginf=0.0)


def _us(value: Instant) -> int:
    """UTC microseconds of an instant."""
    return (utc_instant(value) - EPOCH) // timedelta(microseconds=1)


def collate(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of sample dicts (same keys, same shapes) into a batch dict with a leading B dimension."""
    if not samples:
        raise FinfusionError("cannot collate an empty batch")
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}
