"""Multi-asset portfolio windows on a common timeline: market `past` [A, L, F], news per asset and bar, future returns.

Timeline. The bars of the A symbols of the universe are placed on one timeline of T instants: every instant at which
any of them has a bar, sorted. Row t of every [A, T, ...] array is instant t; a symbol without a bar there is missing.

Market inputs. The columns of `build_panel` (`log_return` and every feature column), z-scored per symbol with
statistics fitted only on the bars with ts < `train_end` (`fit_normalizer`), or with a given fitted normaliser
(validation, test and inference never refit); missing values become 0.

Returns. `returns[a, t]` is the simple return of symbol a's adjusted close from its previous bar to its bar at t
(expm1 of `log_return`): the move over a missing bar lands on the next bar; NaN where the bar is missing.

News. A text counts from the first timeline bar that closes strictly after its publication (the rule of
`features.align`): it is binned to that bar, once for every universe symbol it mentions. A bin (asset, bar) holds the
mean embedding of its texts and their coverage: the universe symbols mentioned by any of them. Only the K non-empty
bins are stored.

Sample of the decision bar t (the item of `PortfolioDataset`; a batch adds a leading B):

- `past`          [A, L, F] float32  normalised inputs of bars t - L + 1 .. t (0 where missing)
- `past_mask`     [A, L]    bool     the symbol has that bar
- `news_emb`      [A, L, D] float32  mean text embedding of each (asset, bar) bin, 0 where it has no text
- `news_mask`     [A, L]    bool     the bin has a text
- `news_coverage` [A, L, A] float32  one-hot of the universe symbols the bin's texts mention
- `future`        [A, H]    float32  simple returns of bars t + 1 .. t + H (0 where missing)
- `future_mask`   [A, H]    bool     the return exists
- `origin_us`     []        int64    the close of bar t, UTC microseconds

Nothing in a sample but `future` and `future_mask` depends on data after the close of bar t. Windows advance by
`stride` timeline bars and are in time order, so consecutive items are consecutive decisions (`ContiguousBatches`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset, Sampler

from finfusion.data.calendar import to_us
from finfusion.errors import FinfusionError
from finfusion.features.align import text_table
from finfusion.features.normalize import FittedNormalizer, utc_instant
from finfusion.samples.contract import (
    FUTURE,
    FUTURE_MASK,
    NEWS_COVERAGE,
    NEWS_EMB,
    NEWS_MASK,
    ORIGIN_US,
    PAST,
    PAST_MASK,
)
from finfusion.samples.windows import LOG_RETURN, Instant, Panel, build_panel, fit_normalizer


@dataclass(frozen=True)
class PortfolioConfig:
    """Lookback L, horizon H (bars), stride, input columns F and the end of the normaliser's training span.

    The defaults are seed 002's: 80 bars in, 80 bars out (3-minute bars: about 4 hours each way).
    """

    lookback: int = 80
    horizon: int = 80
    stride: int = 1
    inputs: tuple[str, ...] = (LOG_RETURN,)
    #: Normaliser statistics use only bars with ts < train_end (required unless a fitted normaliser is given).
    train_end: Instant | None = None
    #: Only windows with all H future bars (training); False also keeps the last bars (prediction).
    require_future: bool = True

    def __post_init__(self) -> None:
        if self.lookback < 1 or self.horizon < 1 or self.stride < 1:
            raise FinfusionError("portfolio config: lookback, horizon and stride must be at least 1")
        if not self.inputs:
            raise FinfusionError("portfolio config: needs at least one input column")


@dataclass(frozen=True)
class NewsBins:
    """Texts binned to (asset, bar): `index` [A, T] int64 (bin of each asset and bar, -1 without a text), `mean`
    [K, D] float32 (mean embedding of each bin) and `coverage` [K, A] bool (universe symbols its texts mention)."""

    index: np.ndarray
    mean: np.ndarray
    coverage: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])


@dataclass(frozen=True)
class PortfolioData:
    """The universe on its common timeline (see the module docstring).

    `symbols` [A]; `ts` [T] int64 UTC microseconds; `present` [A, T] bool; `inputs` [A, T, F] float32 (normalised, 0
    where missing) of the columns `columns` [F]; `returns` [A, T] float64 (NaN where missing); `news` (None without
    texts); `normalizer` fitted on the training span.
    """

    symbols: tuple[str, ...]
    ts: np.ndarray
    present: np.ndarray
    columns: tuple[str, ...]
    inputs: np.ndarray
    returns: np.ndarray
    news: NewsBins | None
    normalizer: FittedNormalizer


def timeline_rows(panel: Panel) -> tuple[np.ndarray, list[np.ndarray]]:
    """The common timeline [T] of a panel's symbols, and each symbol's rows on it [n_s] (its bars in order)."""
    ts = np.unique(np.concatenate(panel.ts)) if panel.ts else np.zeros(0, dtype=np.int64)
    return ts, [np.searchsorted(ts, symbol_ts) for symbol_ts in panel.ts]


def on_timeline(n_rows: int, rows: Sequence[np.ndarray], values: Sequence[np.ndarray], fill: float) -> np.ndarray:
    """Per-symbol values [n_s, K] at their timeline `rows` [n_s] as a grid [S, T, K]; `fill` where a bar is missing."""
    width = values[0].shape[1] if values else 0
    grid = np.full((len(values), n_rows, width), fill)
    for s, (symbol_rows, symbol_values) in enumerate(zip(rows, values, strict=True)):
        grid[s, symbol_rows] = symbol_values
    return grid


def universe_panel(bars: pl.DataFrame, features: pl.DataFrame | None, symbols: Sequence[str] | None) -> Panel:
    """`build_panel` of the universe's bars (+ features), symbols in the order of `symbols` (default: sorted)."""
    if "symbol" not in bars.columns:
        raise FinfusionError("bars need a symbol column")
    universe = list(symbols) if symbols is not None else sorted(bars["symbol"].unique().to_list())
    unknown = sorted(set(universe) - set(bars["symbol"].unique().to_list()))
    if unknown:
        raise FinfusionError(f"symbol(s) without bars: {', '.join(unknown[:10])}")
    if not universe:
        raise FinfusionError("the universe has no symbols")
    panel = build_panel(bars.filter(pl.col("symbol").is_in(universe)), features)
    position = {s: i for i, s in enumerate(panel.symbols)}
    picks = [position[s] for s in universe]
    ts, values = [panel.ts[i] for i in picks], [panel.values[i] for i in picks]
    return Panel(tuple(universe), panel.columns, ts, values, panel.frame)


def normalised_inputs(panel: Panel, columns: Sequence[str], normalizer: FittedNormalizer) -> list[np.ndarray]:
    """Per symbol of `panel`, its `columns` [n_s, F] z-scored with `normalizer`, missing values as 0."""
    unfitted = [c for c in columns if c not in normalizer.columns]
    if unfitted:
        raise FinfusionError(f"the normaliser was not fitted on column(s) {', '.join(unfitted)}")
    scaled = normalizer.transform(panel.frame.select("symbol", "ts", *columns))
    by_symbol = scaled.partition_by("symbol", as_dict=True, maintain_order=True)
    out = []
    for symbol in panel.symbols:
        values = by_symbol[(symbol,)].select(columns).to_numpy().astype(np.float64)
        out.append(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0))
    return out


def text_mentions(
    texts: pl.DataFrame, embeddings: pl.DataFrame, ts: np.ndarray, symbols: Sequence[str]
) -> tuple[pl.DataFrame, np.ndarray]:
    """Where `texts` [id, published_at, symbols, text_hash] are binned on timeline `ts` [T] (module docstring): one
    row per (text, universe asset it mentions) whose bar is on the timeline [text, id, published_at, row, asset,
    bar], sorted by (text, asset), and the vectors [U, D] that `row` indexes.

    `embeddings` [text_hash, vector] must hold every text's hash (`features.text.load_embeddings` returns that frame).
    """
    table, vectors = text_table(texts, embeddings)
    codes = pl.DataFrame({"symbols": list(symbols)}, schema={"symbols": pl.String}).with_row_index("asset")
    bar = np.searchsorted(ts, to_us(table["published_at"]), side="right")
    mentions = (
        table.select("text", "id", "published_at", "row", "symbols")
        .with_columns(bar=pl.Series(bar, dtype=pl.Int64))
        .filter(pl.col("bar") < len(ts))
        .explode("symbols")
        .join(codes, on="symbols", how="inner")
        .unique(["text", "asset"])
        .sort("text", "asset")
    )
    return mentions, vectors


def bin_news(texts: pl.DataFrame, embeddings: pl.DataFrame, ts: np.ndarray, symbols: Sequence[str]) -> NewsBins:
    """Bin `texts` [id, published_at, symbols, text_hash] to the (asset, bar) of timeline `ts` [T] (module docstring).

    Texts are summed in (published_at, id) order in float64, so a bin's mean never depends on texts of other bins.
    """
    mentions, vectors = text_mentions(texts, embeddings, ts, symbols)
    asset = mentions["asset"].to_numpy().astype(np.int64)
    bins, inverse = np.unique(asset * len(ts) + mentions["bar"].to_numpy(), return_inverse=True)
    sums = np.zeros((len(bins), vectors.shape[1]))
    np.add.at(sums, inverse, vectors[mentions["row"].to_numpy()].astype(np.float64))
    mean = (sums / np.bincount(inverse, minlength=len(bins))[:, None]).astype(np.float32)
    hits = pl.DataFrame({"bin": inverse, "text": mentions["text"]}).join(
        mentions.select("text", "asset"), on="text", how="inner"
    )
    coverage = np.zeros((len(bins), len(symbols)), dtype=bool)
    coverage[hits["bin"].to_numpy(), hits["asset"].to_numpy()] = True
    index = np.full((len(symbols), len(ts)), -1, dtype=np.int64)
    index[bins // max(len(ts), 1), bins % max(len(ts), 1)] = np.arange(len(bins))
    return NewsBins(index, mean, coverage)


def build_portfolio_data(
    bars: pl.DataFrame,
    config: PortfolioConfig,
    *,
    features: pl.DataFrame | None = None,
    texts: pl.DataFrame | None = None,
    embeddings: pl.DataFrame | None = None,
    symbols: Sequence[str] | None = None,
    normalizer: FittedNormalizer | None = None,
) -> PortfolioData:
    """The universe `symbols` (default: every symbol of `bars`, sorted) on its timeline, with news when `texts` and
    their `embeddings` are given. Fits the normaliser on ts < `config.train_end` unless `normalizer` is given."""
    panel = universe_panel(bars, features, symbols)
    panel.column_index(config.inputs)
    if normalizer is None:
        if config.train_end is None:
            raise FinfusionError("portfolio config: train_end is needed to fit the normaliser (or pass one)")
        normalizer = fit_normalizer(panel, config.inputs, config.train_end)
    ts, rows = timeline_rows(panel)
    inputs = on_timeline(len(ts), rows, normalised_inputs(panel, config.inputs, normalizer), 0.0)
    column = panel.column_index([LOG_RETURN])
    returns = on_timeline(len(ts), rows, [np.expm1(v[:, column]) for v in panel.values], np.nan)[..., 0]
    present = on_timeline(len(ts), rows, [np.ones((len(r), 1)) for r in rows], 0.0)[..., 0].astype(bool)
    news = None
    if texts is not None:
        if embeddings is None:
            raise FinfusionError("texts need their embeddings (features.text.load_embeddings)")
        news = bin_news(texts, embeddings, ts, panel.symbols)
    return PortfolioData(
        panel.symbols, ts, present, tuple(config.inputs), inputs.astype(np.float32), returns, news, normalizer
    )


class PortfolioDataset(Dataset[dict[str, torch.Tensor]]):
    """One window per decision bar of `data`'s timeline (see the module docstring for the sample's keys and shapes).

    `positions` [M] are the decision rows, increasing; by default every `stride`-th row from the first with a full
    lookback (and, when `require_future`, a full horizon).
    """

    def __init__(self, data: PortfolioData, config: PortfolioConfig, positions: np.ndarray | None = None) -> None:
        if tuple(config.inputs) != data.columns:
            raise FinfusionError(f"config inputs {config.inputs} differ from the data's columns {data.columns}")
        self.data = data
        self.config = config
        if positions is None:
            last = len(data.ts) - (config.horizon if config.require_future else 0)
            positions = np.arange(config.lookback - 1, last, config.stride, dtype=np.int64)
        self.positions = np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.data.symbols

    @property
    def origins_us(self) -> np.ndarray:
        """Decision instants [M] int64 (UTC microseconds)."""
        return self.data.ts[self.positions]

    @property
    def future_end_us(self) -> np.ndarray:
        """Instant [M] of each window's last existing future bar (its origin when it has none)."""
        return self.data.ts[np.minimum(self.positions + self.config.horizon, len(self.data.ts) - 1)]

    def split(self, start: Instant | None = None, end: Instant | None = None, purge: bool = True) -> PortfolioDataset:
        """Windows with origin >= `start` and, with `purge`, whose whole window (future included) lies before `end`;
        without it, whose origin lies before `end`."""
        keep = np.ones(len(self), dtype=bool)
        if start is not None:
            keep &= self.origins_us >= instant_us(start)
        if end is not None:
            keep &= (self.future_end_us if purge else self.origins_us) < instant_us(end)
        return PortfolioDataset(self.data, self.config, self.positions[keep])

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        t = int(self.positions[item])
        lookback, horizon = self.config.lookback, self.config.horizon
        past_rows = slice(t - lookback + 1, t + 1)
        future = self.data.returns[:, t + 1 : t + 1 + horizon]
        padded = np.full((len(self.data.symbols), horizon), np.nan)
        padded[:, : future.shape[1]] = future
        sample = {
            PAST: torch.from_numpy(self.data.inputs[:, past_rows]),
            PAST_MASK: torch.from_numpy(self.data.present[:, past_rows].copy()),
            FUTURE: torch.from_numpy(np.nan_to_num(padded, nan=0.0).astype(np.float32)),
            FUTURE_MASK: torch.from_numpy(np.isfinite(padded)),
            ORIGIN_US: torch.tensor(int(self.data.ts[t]), dtype=torch.int64),
        }
        if self.data.news is not None:
            sample.update(news_tensors(self.data.news, past_rows))
        return sample


def instant_us(value: Instant) -> int:
    """UTC microseconds of an instant (ISO string, date or datetime; naive ones are UTC)."""
    return int(to_us(pl.Series([utc_instant(value)]))[0])


def news_tensors(news: NewsBins, rows: slice) -> dict[str, torch.Tensor]:
    """`news_emb` [A, L, D], `news_mask` [A, L] and `news_coverage` [A, L, A] of the L timeline rows `rows`."""
    index = news.index[:, rows]
    has = index >= 0
    emb = np.zeros((*index.shape, news.dim), dtype=np.float32)
    emb[has] = news.mean[index[has]]
    coverage = np.zeros((*index.shape, news.coverage.shape[1]), dtype=np.float32)
    coverage[has] = news.coverage[index[has]]
    return {
        NEWS_EMB: torch.from_numpy(emb),
        NEWS_MASK: torch.from_numpy(has),
        NEWS_COVERAGE: torch.from_numpy(coverage),
    }


class ContiguousBatches(Sampler[list[int]]):
    """Batches of `batch_size` consecutive items (consecutive decisions of a `PortfolioDataset`): a batch is a run of
    decisions in time order, so each decision's previous weights are those of the item before it. With `shuffle`,
    the batches come in an order drawn from (seed, epoch) alone (the trainer calls `set_epoch`), so a resumed run
    sees the same order as an uninterrupted one."""

    def __init__(self, n_items: int, batch_size: int, shuffle: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise FinfusionError("batch_size must be at least 1")
        self.n_items = n_items
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self))
        else:
            order = np.arange(len(self))
        for batch in order:
            start = int(batch) * self.batch_size
            yield list(range(start, min(start + self.batch_size, self.n_items)))

    def __len__(self) -> int:
        return -(-self.n_items // self.batch_size)
