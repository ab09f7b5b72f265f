"""Continuous bar features: one Float64 column per feature for every bar, from that symbol's bars at or before it.

Prices are split-adjusted first: price * adj_factor (a missing factor counts as 1; without an `adj_factor` column,
adj_close / close; without either, 1) and volume / adj_factor. Every price feature is a ratio of prices, so a later
split, which rescales the adjusted history by a constant, leaves it unchanged.

Columns, with the `FeatureConfig` defaults in brackets (w: a window of bars, all trailing and ending at the bar):

    ret_{k}          log return over k bars [1, 5, 20]: log(close_t / close_{t-k})
    gap              log(open_t / close_{t-1}), the move between bars
    body             log(close_t / open_t), the move inside the bar
    range_hl         log(high_t / low_t)
    close_pos        (close - low) / (high - low): 0 at the low, 1 at the high, 0.5 when high == low
    rv_{w}           realised volatility sqrt(mean(ret_1 ** 2)) over w bars [5, 20, 60]
    ret_z_{w}        (ret_1 - mean(ret_1)) / std(ret_1) over w bars [20, 60]: the move in units of recent volatility
    rv_z_{w}         (rv_w - mean(rv_w)) / std(rv_w) over the last m bars [w = 20, m = 120]: the volatility regime
    volume_z_{w}     (log1p(volume) - mean) / std over w bars [20]
    vol_imb_{w}      volume imbalance sum(sign(close - open) * volume) / sum(volume) over w bars [5, 20], in [-1, 1]:
                     the volume of up bars counts as buying, of down bars as selling, of flat bars as neither
    rsi_{n}          Wilder's relative strength index [14], 0 .. 100
    macd, macd_signal, macd_hist
                     MACD of log close, EMA spans [12, 26, 9] (so the line is scale-free, about a percentage)
    atr_{n}          Wilder's average true range [14] / close
    bb_pos_{w}       Bollinger %B of log close [20 bars, bands 2 population std wide], scale-free like the MACD
    ma_ratio_{w}     close / simple moving average - 1 [5, 20, 60]
    {minute,dow,month}_{sin,cos}_{k}
                     calendar Fourier terms, harmonics k = 1 .. [2] (see calendar_features)

Standard deviations use ddof=1 except Bollinger's (ddof=0); a division by zero gives null. A value is null until its
window has filled (warm-up) and wherever an input in its window is missing. The definitions are repeated plainly in
pandas in benchmarks/features.py, which checks both agree to 1e-9.
"""

from __future__ import annotations

import os
import zoneinfo
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from finfusion.data.calendar import to_us
from finfusion.errors import FinfusionError
from finfusion.features.calendar_features import calendar_feature_names, calendar_features
from finfusion.features.indicators import (
    WindowSums,
    atr,
    bollinger_pct_b,
    diff,
    divide_or_nan,
    ma_ratio,
    macd,
    rolling_zscores,
    rsi,
    shift,
)

#: Most threads `build_features` uses (symbols are split between them; numpy releases the GIL on whole-grid passes).
MAX_THREADS = 4


@dataclass(frozen=True)
class FeatureConfig:
    """Windows (in bars) and options of `build_features`."""

    return_horizons: tuple[int, ...] = (1, 5, 20)
    volatility_windows: tuple[int, ...] = (5, 20, 60)
    zscore_windows: tuple[int, ...] = (20, 60)
    #: (w, m): z-score of rv_w over the last m bars.
    volatility_zscore: tuple[int, int] = (20, 120)
    volume_window: int = 20
    imbalance_windows: tuple[int, ...] = (5, 20)
    rsi_window: int = 14
    atr_window: int = 14
    macd_spans: tuple[int, int, int] = (12, 26, 9)
    bollinger_window: int = 20
    bollinger_width: float = 2.0
    ma_windows: tuple[int, ...] = (5, 20, 60)
    calendar_harmonics: int = 2
    #: Time zone of the exchange (calendar features use local time).
    timezone: str = "America/New_York"

    def __post_init__(self) -> None:
        at_least = {
            1: [*self.return_horizons, *self.volatility_windows, *self.imbalance_windows, *self.ma_windows],
            2: [
                *self.zscore_windows,
                *self.volatility_zscore,
                self.volume_window,
                self.rsi_window,
                self.atr_window,
                self.bollinger_window,
                *self.macd_spans,
            ],
        }
        for low, windows in at_least.items():
            if any(w < low for w in windows):
                raise FinfusionError(f"feature config: every window must be at least {low} bar(s), got {windows}")
        if self.macd_spans[0] >= self.macd_spans[1]:
            raise FinfusionError(f"feature config: MACD fast span must be below the slow one, got {self.macd_spans}")
        if self.calendar_harmonics < 0 or self.bollinger_width <= 0:
            raise FinfusionError("feature config: calendar_harmonics must be >= 0 and bollinger_width > 0")
        if len(set(self.names)) != len(self.names):
            raise FinfusionError(f"feature config: repeated windows give repeated columns: {self.names}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise FinfusionError(f"feature config: unknown time zone '{self.timezone}'") from exc

    @property
    def names(self) -> list[str]:
        """Feature column names, in output order."""
        return [*self.bar_names, *calendar_feature_names(self.calendar_harmonics)]

    @property
    def bar_names(self) -> list[str]:
        """Names of the features computed from prices and volume (all but the calendar ones)."""
        return [
            *(f"ret_{k}" for k in self.return_horizons),
            "gap",
            "body",
            "range_hl",
            "close_pos",
            *(f"rv_{w}" for w in self.volatility_windows),
            *(f"ret_z_{w}" for w in self.zscore_windows),
            f"rv_z_{self.volatility_zscore[0]}",
            f"volume_z_{self.volume_window}",
            *(f"vol_imb_{w}" for w in self.imbalance_windows),
            f"rsi_{self.rsi_window}",
            "macd",
            "macd_signal",
            "macd_hist",
            f"atr_{self.atr_window}",
            f"bb_pos_{self.bollinger_window}",
            *(f"ma_ratio_{w}" for w in self.ma_windows),
        ]


def build_features(bars: pl.DataFrame, config: FeatureConfig | None = None) -> pl.DataFrame:
    """Features of `bars` (BARS columns: symbol, ts, close required; open, high, low, volume, adj_factor optional).

    Returns [N rows: symbol, ts, one Float64 column per name in `config.names`], one row per bar, sorted by
    (symbol, ts). Raises FinfusionError on a missing required column or two bars of one symbol at the same ts.
    """
    config = config or FeatureConfig()
    bars, lengths = _in_order(bars)
    if bars.height == 0:
        return pl.DataFrame(
            [bars["symbol"], bars["ts"], *(pl.Series(name, [], dtype=pl.Float64) for name in config.names)]
        )
    inputs = _adjusted_inputs(bars)
    workers = _threads()
    layout = panels(lengths, parts=workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        calendar = pool.submit(_calendar, to_us(bars["ts"]), lengths, config)
        parts = list(pool.map(lambda panel: _panel_features(panel, inputs, config), layout))
        columns = _assemble(layout, parts, bars.height)
        columns |= {name: pl.Series(name, values) for name, values in calendar.result().items()}
    return pl.DataFrame([bars["symbol"], bars["ts"], *(columns[name] for name in config.names)])


def _threads() -> int:
    """The CPUs this process may run on, at most MAX_THREADS."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_THREADS, available)


def _panel_features(panel: Panel, inputs: dict[str, np.ndarray], config: FeatureConfig) -> dict[str, np.ndarray]:
    """{feature: [n] values of the panel's bars, in its `rows` order}."""
    grids = _grid_features({name: panel.grid(column) for name, column in inputs.items()}, config)
    return {name: panel.values(grid) for name, grid in grids.items()}


def _assemble(layout: list[Panel], parts: list[dict[str, np.ndarray]], n_rows: int) -> dict[str, pl.Series]:
    """Frame columns [N] (NaN as null) from each panel's values; consecutive row ranges become chunks, uncopied."""
    if all(isinstance(panel.rows, slice) for panel in layout):
        return {
            name: pl.concat([pl.Series(name, part[name], nan_to_null=True) for part in parts], rechunk=False)
            for name in parts[0]
        }
    out = {}
    for name in parts[0]:
        values = np.empty(n_rows)
        for panel, part in zip(layout, parts, strict=True):
            values[panel.rows] = part[name]
        out[name] = pl.Series(name, values, nan_to_null=True)
    return out


def _calendar(ts_us: np.ndarray, lengths: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Calendar features [N]; computed once and repeated when every symbol has the very same timestamps."""
    width = int(lengths[0])
    if (lengths == width).all() and (ts_us.reshape(-1, width) == ts_us[:width]).all():
        once = calendar_features(ts_us[:width], config.timezone, config.calendar_harmonics)
        return {name: np.tile(column, len(lengths)) for name, column in once.items()}
    return calendar_features(ts_us, config.timezone, config.calendar_harmonics)


def _grid_features(g: dict[str, np.ndarray], config: FeatureConfig) -> dict[str, np.ndarray]:
    """Every price/volume feature as an [S, L] grid from adjusted close/open/high/low/volume grids [S, L]."""
    close, open_, high, low, volume = g["close"], g["open"], g["high"], g["low"], g["volume"]
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        log_close, log_open = np.log(close), np.log(open_)
        ret = diff(log_close, 1)
        for k in config.return_horizons:
            out[f"ret_{k}"] = ret if k == 1 else diff(log_close, k)
        out["gap"] = log_open - shift(log_close, 1)
        out["body"] = log_close - log_open
        out["range_hl"] = np.log(high / low)
        out["close_pos"] = np.where(high == low, 0.5, (close - low) / (high - low))

        squares = WindowSums(ret * ret, start=1)
        vol_window, regime_window = config.volatility_zscore
        for w in sorted({*config.volatility_windows, vol_window}):
            rv = squares.sum(w)
            rv /= w
            np.sqrt(rv, out=rv)
            if w in config.volatility_windows:
                out[f"rv_{w}"] = rv
            if w == vol_window:
                out[f"rv_z_{w}"] = rolling_zscores(rv, [regime_window], start=w)[regime_window]
        for w, z in rolling_zscores(ret, config.zscore_windows, start=1).items():
            out[f"ret_z_{w}"] = z
        volume_z = rolling_zscores(np.log1p(volume), [config.volume_window])
        out[f"volume_z_{config.volume_window}"] = volume_z[config.volume_window]
        signed, total = WindowSums(np.sign(close - open_) * volume), WindowSums(volume)
        for w in config.imbalance_windows:
            out[f"vol_imb_{w}"] = divide_or_nan(signed.sum(w), total.sum(w))

        out[f"rsi_{config.rsi_window}"] = rsi(close, config.rsi_window)
        out["macd"], out["macd_signal"], out["macd_hist"] = macd(log_close, *config.macd_spans)
        out[f"atr_{config.atr_window}"] = atr(high, low, close, config.atr_window) / close
        out[f"bb_pos_{config.bollinger_window}"] = bollinger_pct_b(
            log_close, config.bollinger_window, config.bollinger_width
        )
        price_sums = WindowSums(close)
        for w in config.ma_windows:
            out[f"ma_ratio_{w}"] = ma_ratio(close, w, price_sums)
    return out


@dataclass(frozen=True)
class Panel:
    """Some symbols' bars as an [S, L] grid: symbol i's bars, in time order, fill row i from column 0.

    `rows`: the frame rows of those bars, symbol by symbol (a slice when they are consecutive); `cells` [n]: their
    positions in the flattened grid (None: the grid is exactly full, every symbol has L bars). The cells past a
    symbol's last bar, `padding`, repeat that bar's value (`padding_source`): later in time, they never reach a real
    bar, and being finite they keep windows off the missing-value path.
    """

    shape: tuple[int, int]
    rows: slice | np.ndarray
    cells: np.ndarray | None = None
    padding: np.ndarray | None = None
    padding_source: np.ndarray | None = None

    def grid(self, column: np.ndarray) -> np.ndarray:
        """[S, L] grid of a frame column [N]."""
        mine = column[self.rows]
        if self.cells is None:
            return mine.reshape(self.shape)
        out = np.empty(self.shape[0] * self.shape[1])
        out[self.cells] = mine
        out[self.padding] = out[self.padding_source]
        return out.reshape(self.shape)

    def values(self, grid: np.ndarray) -> np.ndarray:
        """[n] the bars' values of an [S, L] grid, in `rows` order."""
        flat = grid.reshape(-1)
        return flat if self.cells is None else flat[self.cells]


def panels(lengths: np.ndarray, parts: int = 1) -> list[Panel]:
    """Grids covering every bar of a frame whose symbols occupy consecutive runs of `lengths` [S] rows.

    The symbols are cut into up to `parts` consecutive groups of about equal bar counts (to compute in parallel);
    within a group, symbols of similar length (the same power of two) share a grid, so padding never more than
    doubles the cells.
    """
    ends = np.cumsum(lengths)
    starts = ends - lengths
    cuts = np.unique(np.searchsorted(ends, ends[-1] * np.arange(1, parts) / parts, side="right"))
    out = []
    for group in np.split(np.arange(len(lengths)), cuts):
        if len(group) == 0:
            continue
        sizes = lengths[group]
        if (sizes == sizes[0]).all():
            out.append(Panel((len(group), int(sizes[0])), slice(int(starts[group[0]]), int(ends[group[-1]]))))
            continue
        bucket = np.floor(np.log2(sizes)).astype(np.int64)
        out.extend(_padded_panel(group[bucket == b], starts, lengths) for b in np.unique(bucket))
    return out


def _padded_panel(members: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> Panel:
    """The grid of symbols `members` (indices into `starts`/`lengths`), padded to the longest of them."""
    sizes = lengths[members]
    width = int(sizes.max())
    row_start = np.arange(len(members)) * width
    position = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    gaps = width - sizes
    gap_position = np.arange(gaps.sum()) - np.repeat(np.cumsum(gaps) - gaps, gaps)
    return Panel(
        shape=(len(members), width),
        rows=np.repeat(starts[members], sizes) + position,
        cells=np.repeat(row_start, sizes) + position,
        padding=np.repeat(row_start + sizes, gaps) + gap_position,
        padding_source=np.repeat(row_start + sizes - 1, gaps),
    )


def _in_order(bars: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """(bars sorted by (symbol, ts), per-symbol run lengths [S]); raises on missing columns or duplicate bars."""
    missing = [c for c in ("symbol", "ts", "close") if c not in bars.columns]
    if missing:
        raise FinfusionError(f"bars lack the column(s) {', '.join(missing)}")
    ordered = bars["symbol"].is_sorted()
    lengths, ascending = _runs(bars) if ordered else (None, False)
    if not ascending:
        bars = bars.sort("symbol", "ts")
        lengths, ascending = _runs(bars)
        if not ascending:
            raise FinfusionError("bars hold two rows of one symbol with the same ts: de-duplicate them first")
    return bars, lengths


def _runs(bars: pl.DataFrame) -> tuple[np.ndarray, bool]:
    """(lengths [S] of the runs of equal symbols, whether ts strictly increases inside every run)."""
    lengths = bars["symbol"].rle().struct.field("len").to_numpy().astype(np.int64)
    ts_us = to_us(bars["ts"])
    later = np.diff(ts_us) > 0
    later[np.cumsum(lengths)[:-1] - 1] = True
    return lengths, bool(later.all())


def _adjusted_inputs(bars: pl.DataFrame) -> dict[str, np.ndarray]:
    """Split-adjusted close, open, high, low [N] (price * factor) and volume [N] (volume / factor); NaN = missing."""
    close = _floats(bars, "close")
    if "adj_factor" in bars.columns:
        factor = _floats(bars, "adj_factor")
    elif "adj_close" in bars.columns:
        factor = _floats(bars, "adj_close") / close
    else:
        factor = np.ones(bars.height)
    factor = np.where(np.isnan(factor), 1.0, factor)
    out = {"close": close * factor}
    for name in ("open", "high", "low"):
        out[name] = _floats(bars, name) * factor
    out["volume"] = _floats(bars, "volume") / factor
    return out


def _floats(bars: pl.DataFrame, name: str) -> np.ndarray:
    if name not in bars.columns:
        return np.full(bars.height, np.nan)
    return bars[name].cast(pl.Float64).to_numpy()
