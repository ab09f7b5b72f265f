"""The StockNet (ACL18) benchmark samples, built as published (Xu & Cohen 2018; yumoxu/stocknet-code DataPipe).

Targets. A target is a (symbol, trading day t) with t in [2014-01-01, 2016-01-01). Its movement is
adj_close(t) / adj_close(t-1) - 1 rounded to 6 decimals (as the published price/preprocessed files print it);
targets with -0.5% <= movement < +0.55% are dropped; the label is up (1) if movement > 1e-7, else down (0). A target
is kept only when the symbol has a bar with a movement strictly before t - (lag_days - 1) calendar days (a full
lookback). Splits by t: train [2014-01-01, 2015-08-01), dev [2015-08-01, 2015-10-01), test [2015-10-01, 2016-01-01).
On the public copy this gives 20,339 / 2,555 / 3,720 targets, 50.22% up (`PUBLISHED_COUNTS`).

Steps. The trading days of the symbol in [t - (lag_days - 1), t] are the window's steps s_1 < ... < s_T = t
(T <= lag_days). Step k carries the price features of the trading day before s_k (so the last step holds day t-1,
never day t) and the tweets of the calendar days d with s_{k-1} <= d < s_k (for k = 1: t - lag_days <= d < s_1): a
tweet filed on day d counts towards the next trading day after d. A tweet's day is the date of its StockNet file
(`tweet/preprocessed/<TICKER>/<DATE>`); at most `max_tweets` per step are kept, the most recent ones.

Point-in-time. The decision instant of target t (`origin_us`) is 00:00 UTC of day t, before its session opens.
Inputs use bars up to day t-1 and tweets filed before day t, each published before that instant (checked: a tweet
published after the end of its file's day is an error). The price channels of a day (`PRICE_CHANNELS`: its close,
open, high and low against the previous adjusted close, volume change, adjusted close over trailing 5/10/20/30-bar
means, and the market's mean close return over all symbols that day) use bars up to that day only; they are z-scored
per symbol with statistics of the bars before the end of the train split (`TRAIN_END`), so no dev or test bar reaches
them.

Sample dict (L = lag_days, N = max_tweets, C = price channels, D = text dim; B-less shapes):
`past` [L, C] float32, `past_mask` [L] bool (steps are left-padded, the target step is last), `text_emb` [L, N, D]
float32 (per-step tweets, oldest first), `text_mask` [L, N] bool, `text_age` [L, N] float32 (days from publication
to the decision instant, 0 on padding), `label` [] int64, `symbol_index` [] int64, `origin_us` [] int64.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset

from finfusion.errors import FinfusionError
from finfusion.features.normalize import FittedNormalizer
from finfusion.samples.contract import LABEL, ORIGIN_US, PAST, PAST_MASK, SYMBOL_INDEX, TEXT_AGE, TEXT_EMB, TEXT_MASK

#: Split name -> [start, end) of target days.
SPLITS: dict[str, tuple[date, date]] = {
    "train": (date(2014, 1, 1), date(2015, 8, 1)),
    "dev": (date(2015, 8, 1), date(2015, 10, 1)),
    "test": (date(2015, 10, 1), date(2016, 1, 1)),
}
TRAIN_END = SPLITS["train"][1]
PUBLISHED_COUNTS: dict[str, int] = {"train": 20_339, "dev": 2_555, "test": 3_720}
PUBLISHED_UP_RATE = 0.5022
#: Trailing moving averages (bars) of the adjusted close that the `ma*` channels compare it with.
MA_WINDOWS = (5, 10, 20, 30)
#: Price channels of a step: close / open / high / low of the day relative to the previous adjusted close, the log
#: change of volume, the adjusted close over its trailing moving averages, and the market's close (the mean close
#: channel of every symbol that day).
PRICE_CHANNELS = ("close", "open", "high", "low", "volume", *(f"ma{k}" for k in MA_WINDOWS), "market")
EXCHANGE_TZ = "America/New_York"
_DAY = np.timedelta64(1, "D")
_US_PER_DAY = 86_400_000_000
_FILE_DAY = re.compile(r"/(\d{4}-\d{2}-\d{2}):\d+$")


@dataclass(frozen=True)
class ACL18Config:
    """The lag window (max_n_days), tweets kept per step (max_n_msgs), the dead band and the movement rounding."""

    lag_days: int = 5
    max_tweets: int = 30
    up_threshold: float = 0.0055
    down_threshold: float = 0.005
    decimals: int = 6

    def __post_init__(self) -> None:
        if self.lag_days < 1 or self.max_tweets < 1:
            raise FinfusionError("ACL18 config: lag_days and max_tweets must be at least 1")
        if self.up_threshold < 0 or self.down_threshold < 0:
            raise FinfusionError("ACL18 config: the dead-band thresholds are magnitudes and must be >= 0")


def acl18_labels(moves: np.ndarray, config: ACL18Config) -> np.ndarray:
    """Labels [M] int64 of movements [M]: -1 inside [-down, +up) (dropped), 1 above 1e-7, else 0 (StockNet's rule)."""
    labels = np.where(moves > 1e-7, 1, 0).astype(np.int64)
    labels[(moves >= -config.down_threshold) & (moves < config.up_threshold)] = -1
    return labels


def session_days(ts: pl.Series) -> np.ndarray:
    """Exchange dates [n] datetime64[D] of daily bars closing at `ts` (UTC)."""
    return ts.dt.convert_time_zone(EXCHANGE_TZ).dt.date().to_numpy().astype("datetime64[D]")


def split_of(days: np.ndarray) -> np.ndarray:
    """Split name [M] of target days [M] datetime64[D] ("" outside every split)."""
    out = np.full(days.shape, "", dtype=object)
    for name, (start, end) in SPLITS.items():
        out[(days >= np.datetime64(start)) & (days < np.datetime64(end))] = name
    return out


def price_features(bars: pl.DataFrame) -> pl.DataFrame:
    """Per-bar channels [n rows: symbol, ts, PRICE_CHANNELS...] from bars [symbol, ts, open, high, low, close,
    adj_close, volume] sorted by (symbol, ts); nulls where the history is too short. Each uses bars up to its own."""
    needed = {"symbol", "ts", "open", "high", "low", "close", "adj_close", "volume"}
    if missing := needed - set(bars.columns):
        raise FinfusionError(f"ACL18 bars lack column(s) {sorted(missing)}")
    adjusted = pl.col("adj_close")
    factor = adjusted / pl.col("close")
    previous = adjusted.shift(1).over("symbol")
    relative = [(pl.col(c) * factor / previous - 1.0).alias(c) for c in ("open", "high", "low")]
    volume = pl.col("volume").log1p()
    averages = [(adjusted / adjusted.rolling_mean(k).over("symbol") - 1.0).alias(f"ma{k}") for k in MA_WINDOWS]
    features = bars.select(
        "symbol",
        "ts",
        (adjusted / previous - 1.0).alias("close"),
        *relative,
        (volume - volume.shift(1).over("symbol")).alias("volume"),
        *averages,
    )
    return features.with_columns(pl.col("close").mean().over("ts").alias("market"))


def stocknet_file_days(source_refs: pl.Series) -> pl.Series:
    """The day of each StockNet post, from its `source_ref` 'tweet/preprocessed/<TICKER>/<DATE>:<line>'."""
    days = source_refs.str.extract(_FILE_DAY.pattern).str.to_date("%Y-%m-%d", strict=False)
    if days.null_count():
        bad = source_refs.filter(days.is_null())[0]
        raise FinfusionError(f"text source_ref {bad!r} does not name a StockNet day file (<TICKER>/<YYYY-MM-DD>)")
    return days.alias("day")


@dataclass(frozen=True)
class ACL18Samples:
    """All targets of the benchmark (M rows) with their inputs; `dataset(split)` serves one split.

    targets: frame [M rows: symbol, day, split, movement, label, steps]; price [M, L, C] float32 (normalised);
    step_mask [M, L] bool; tweet_index [M, L, N] int64 rows of `vectors` (-1 on padding); tweet_age [M, L, N]
    float32; vectors [U, D] float32; symbols [S]; symbol_index, labels, origin_us [M] int64; `normalizer` of the
    price channels (fitted before `TRAIN_END`, or the one given to `build_acl18`); `texts` the texts given to
    `build_acl18` (symbol, day, published_at, row and what the caller added, e.g. id and title: which tweet a row of
    `vectors` is, for explanations).
    """

    targets: pl.DataFrame
    price: np.ndarray
    step_mask: np.ndarray
    tweet_index: np.ndarray
    tweet_age: np.ndarray
    vectors: np.ndarray
    symbols: tuple[str, ...]
    symbol_index: np.ndarray
    labels: np.ndarray
    origin_us: np.ndarray
    config: ACL18Config
    normalizer: FittedNormalizer
    texts: pl.DataFrame

    def rows(self, split: str) -> np.ndarray:
        """Positions [M_split] of the targets of `split`."""
        if split not in SPLITS:
            raise FinfusionError(f"unknown ACL18 split '{split}': use {', '.join(SPLITS)}")
        return np.flatnonzero(self.targets["split"].to_numpy() == split)

    def counts(self) -> dict[str, int]:
        """Targets per split."""
        return {name: len(self.rows(name)) for name in SPLITS}

    def up_rate(self) -> float:
        """Share of up labels over all targets."""
        return float(self.labels.mean())

    def dataset(self, split: str) -> ACL18Dataset:
        return ACL18Dataset(self, self.rows(split))


def build_acl18(
    bars: pl.DataFrame,
    texts: pl.DataFrame,
    vectors: np.ndarray,
    config: ACL18Config | None = None,
    normalizer: FittedNormalizer | None = None,
) -> ACL18Samples:
    """The benchmark from daily `bars` [symbol, ts, open, high, low, close, adj_close, volume] and `texts`
    [symbol, day (date of its file), published_at (UTC), row (of `vectors` [U, D]), any further columns kept as
    they are] (see the module docstring)."""
    config = config or ACL18Config()
    missing = {"symbol", "day", "published_at", "row"} - set(texts.columns)
    if missing:
        raise FinfusionError(f"ACL18 texts lack column(s) {sorted(missing)}")
    _check_published_before_day_end(texts)
    bars = bars.sort("symbol", "ts")
    features = price_features(bars)
    if normalizer is None:
        normalizer = FittedNormalizer.fit(
            features, "zscore", features["ts"].min(), TRAIN_END, columns=list(PRICE_CHANNELS)
        )
    scaled = normalizer.transform(features).select(PRICE_CHANNELS).to_numpy().astype(np.float32)
    raw_close = features["close"].to_numpy()
    days_all = session_days(bars["ts"])
    symbols = tuple(bars["symbol"].unique(maintain_order=True).to_list())
    counts = bars.group_by("symbol", maintain_order=True).len()["len"].to_numpy().astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    tweets = _tweets_by_symbol(texts)
    parts = [
        _symbol_samples(
            s,
            days_all[bounds[s] : bounds[s + 1]],
            raw_close[bounds[s] : bounds[s + 1]],
            scaled[bounds[s] : bounds[s + 1]],
            tweets.get(symbol),
            config,
        )
        for s, symbol in enumerate(symbols)
    ]
    parts = [p for p in parts if p is not None]
    if not parts:
        raise FinfusionError("no ACL18 target in 2014-2015 has a full lookback window")
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    targets = pl.DataFrame(
        {
            "symbol": [symbols[i] for i in merged["symbol"]],
            "day": merged["day"].astype("datetime64[D]"),
            "split": split_of(merged["day"]).astype(str),
            "movement": merged["movement"],
            "label": merged["label"],
            "steps": merged["step_mask"].sum(axis=1),
        },
        schema_overrides={"day": pl.Date, "split": pl.String},
    )
    return ACL18Samples(
        targets=targets,
        price=merged["price"],
        step_mask=merged["step_mask"],
        tweet_index=merged["tweet_index"],
        tweet_age=merged["tweet_age"],
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        symbols=symbols,
        symbol_index=merged["symbol"],
        labels=merged["label"],
        origin_us=merged["day"].astype("datetime64[us]").astype(np.int64),
        config=config,
        normalizer=normalizer,
        texts=texts,
    )


def _check_published_before_day_end(texts: pl.DataFrame) -> None:
    """A tweet filed on day d must be published before day d + 1 (00:00 UTC); otherwise it could leak."""
    day_end = (pl.col("day") + pl.duration(days=1)).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    late = texts.filter(pl.col("published_at") >= day_end)
    if late.height:
        row = late.row(0, named=True)
        raise FinfusionError(
            f"{late.height:,} text(s) were published after the end of their file's day (e.g. {row['symbol']} "
            f"published {row['published_at']} filed under {row['day']}): their day would leak the future"
        )


@dataclass(frozen=True)
class _SymbolTweets:
    """One symbol's tweets sorted by (day, published_at): day [K] datetime64[D], published_us [K], row [K]."""

    day: np.ndarray
    published_us: np.ndarray
    row: np.ndarray


def _tweets_by_symbol(texts: pl.DataFrame) -> dict[str, _SymbolTweets]:
    ordered = texts.select("symbol", "day", pl.col("published_at").dt.epoch("us").alias("published_us"), "row").sort(
        "symbol", "day", "published_us", "row"
    )
    out = {}
    for (symbol,), group in ordered.group_by("symbol", maintain_order=True):
        out[str(symbol)] = _SymbolTweets(
            group["day"].to_numpy().astype("datetime64[D]"),
            group["published_us"].to_numpy().astype(np.int64),
            group["row"].to_numpy().astype(np.int64),
        )
    return out


def _symbol_samples(
    symbol_index: int,
    days: np.ndarray,
    close: np.ndarray,
    price: np.ndarray,
    tweets: _SymbolTweets | None,
    config: ACL18Config,
) -> dict[str, np.ndarray] | None:
    """The targets of one symbol with `days` [n], raw close moves [n] and scaled price channels [n, C]."""
    lag, first_day, last_day = config.lag_days, SPLITS["train"][0], SPLITS["test"][1]
    moves = np.round(close, config.decimals)
    has_move = np.flatnonzero(np.isfinite(moves))
    if has_move.size == 0:
        return None
    positions = np.arange(len(days))
    first_step = np.searchsorted(days, days - (lag - 1) * _DAY, side="left")  # [n]
    keep = (
        (days >= np.datetime64(first_day))
        & (days < np.datetime64(last_day))
        & np.isfinite(moves)
        & (days[has_move[0]] < days - (lag - 1) * _DAY)
    )
    labels = acl18_labels(np.nan_to_num(moves), config)
    target = positions[keep & (labels >= 0)]
    if target.size == 0:
        return None
    steps = target - first_step[target] + 1  # [M]
    slot = np.arange(lag)
    step_mask = slot[None, :] >= (lag - steps)[:, None]  # [M, L]
    bar = np.where(step_mask, target[:, None] - (lag - 1 - slot[None, :]), 0)  # [M, L] bar of each step
    out_price = np.where(step_mask[..., None], price[np.maximum(bar - 1, 0)], 0.0).astype(np.float32)
    origin = days[target].astype("datetime64[us]").astype(np.int64)
    index, age = _step_tweets(days, bar, step_mask, target, origin, tweets, config)
    return {
        "symbol": np.full(len(target), symbol_index, dtype=np.int64),
        "day": days[target],
        "movement": moves[target],
        "label": labels[target],
        "price": np.nan_to_num(out_price),
        "step_mask": step_mask,
        "tweet_index": index,
        "tweet_age": age,
    }


def _step_tweets(
    days: np.ndarray,
    bar: np.ndarray,
    step_mask: np.ndarray,
    target: np.ndarray,
    origin_us: np.ndarray,
    tweets: _SymbolTweets | None,
    config: ACL18Config,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the vectors [M, L, N] (-1 padded) and ages in days [M, L, N] of the tweets of each step."""
    m, lag, n = len(target), config.lag_days, config.max_tweets
    index = np.full((m, lag, n), -1, dtype=np.int64)
    age = np.zeros((m, lag, n), dtype=np.float32)
    if tweets is None or tweets.day.size == 0:
        return index, age
    window_start = days[target] - lag * _DAY  # [M]
    previous_step = days[np.maximum(bar - 1, 0)]  # [M, L] the step before each step (or earlier for the first)
    is_first = step_mask & ~np.concatenate([np.zeros((m, 1), dtype=bool), step_mask[:, :-1]], axis=1)
    low = np.where(is_first, window_start[:, None], previous_step)  # [M, L] first day of a step's tweets
    start = np.searchsorted(tweets.day, low, side="left")
    end = np.where(step_mask, np.searchsorted(tweets.day, days[bar], side="left"), start)
    end = np.maximum(start, end)
    first = np.maximum(start, end - n)  # the most recent n
    slots = np.arange(n)
    mask = slots[None, None, :] < (end - first)[..., None]  # [M, L, N]
    position = np.where(mask, first[..., None] + slots, 0)
    index[mask] = tweets.row[position[mask]]
    published = tweets.published_us[position]
    age[mask] = ((origin_us[:, None, None] - published) / _US_PER_DAY)[mask]
    return index, age


class ACL18Dataset(Dataset[dict[str, torch.Tensor]]):
    """One split of `ACL18Samples`: item i is the sample dict of target `rows[i]` (see the module docstring).

    `batch(items)` builds a whole batch at once ([B, ...] shapes); `loader` serves batches that way.
    """

    def __init__(self, samples: ACL18Samples, rows: np.ndarray) -> None:
        self.samples = samples
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        """Labels [M_split] int64."""
        return self.samples.labels[self.rows]

    def __getitems__(self, items: Sequence[int]) -> dict[str, torch.Tensor]:
        """The samples `items` (positions in this split) stacked: `past` [B, L, C], `text_emb` [B, L, N, D], ..."""
        s, rows = self.samples, self.rows[np.asarray(items, dtype=np.int64)]
        index = s.tweet_index[rows]  # [B, L, N]
        emb = np.zeros((*index.shape, s.vectors.shape[1]), dtype=np.float32)  # [B, L, N, D]
        emb[index >= 0] = s.vectors[index[index >= 0]]
        return {
            PAST: torch.from_numpy(s.price[rows]),
            PAST_MASK: torch.from_numpy(s.step_mask[rows]),
            TEXT_EMB: torch.from_numpy(emb),
            TEXT_MASK: torch.from_numpy(index >= 0),
            TEXT_AGE: torch.from_numpy(s.tweet_age[rows]),
            LABEL: torch.from_numpy(s.labels[rows]),
            SYMBOL_INDEX: torch.from_numpy(s.symbol_index[rows]),
            ORIGIN_US: torch.from_numpy(s.origin_us[rows]),
        }

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([item]).items()}

    def loader(self, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        """Batches of `batch_size` built at once by `__getitems__`, reshuffled each epoch from `seed` when asked."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=_as_batch)


def _as_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The collate function of `ACL18Dataset.loader`: `__getitems__` already stacked the batch."""
    return batch
