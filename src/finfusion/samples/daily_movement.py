"""Daily up / down movement samples of any lake dataset, with the StockNet (ACL18) benchmark as its published preset
(Xu & Cohen 2018; yumoxu/stocknet-code DataPipe).

Targets. A target is a (symbol, trading day t) with t inside one of the config's date splits (train / dev / test,
each [start, end)). Its movement over the horizon of k bars is adj_close(t + k - 1) / adj_close(t - 1) - 1 (rounded
to `decimals` when set: the published files print 6); targets with -down_threshold <= movement < +up_threshold are
dropped (the dead band); the label is up (1) if movement > 1e-7, else down (0). A target is kept only when the symbol
has a bar with a movement strictly before t - (lag_days - 1) calendar days (a full lookback) and, purged, when its
label's last bar t + k - 1 lies in the same split as t (no training label reads a dev or test price). The ACL18
preset (`ACL18_SPLITS`, k = 1, +0.55% / -0.5%): train [2014-01-01, 2015-08-01), dev [2015-08-01, 2015-10-01), test
[2015-10-01, 2016-01-01); on the public copy 20,339 / 2,555 / 3,720 targets, 50.22% up (`PUBLISHED_COUNTS`).

Steps. The trading days of the symbol in [t - (lag_days - 1), t] are the window's steps s_1 < ... < s_T = t
(T <= lag_days). Step k carries the price features of the trading day before s_k (so the last step holds day t-1,
never day t) and the texts of the days d with s_{k-1} <= d < s_k (for k = 1: t - lag_days <= d < s_1): a text of
day d counts towards the next trading day after d. A text's day is the date of its StockNet file
(`tweet/preprocessed/<TICKER>/<DATE>`) for the benchmark, else the session of the first bar closing strictly after
its publication (daily_movement_lake.py); at most `max_tweets` per step are kept, the most recent ones.

Point-in-time. The decision instant of target t (`origin_us`) is 00:00 UTC of day t, before its session opens.
Inputs use bars up to day t-1 and texts of days before t, each published before that instant (checked: a text
published after the end of its day is an error). The price channels of a day (`PRICE_CHANNELS`: its close,
open, high and low against the previous adjusted close, volume change, adjusted close over trailing 5/10/20/30-bar
means, and the market's mean close return over all symbols that day) use bars up to that day only; they are z-scored
per symbol with statistics of the bars before the end of the train split (`DailyMovementConfig.train_end`), so no
dev or test bar reaches them.

Sample dict (L = lag_days, N = max_tweets, C = price channels, D = text dim; B-less shapes):
`past` [L, C] float32, `past_mask` [L] bool (steps are left-padded, the target step is last), `text_emb` [L, N, D]
float32 (per-step texts, oldest first), `text_mask` [L, N] bool, `text_age` [L, N] float32 (days from publication
to the decision instant, 0 on padding), `label` [] int64, `symbol_index` [] int64, `origin_us` [] int64.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset

from finfusion.errors import FinfusionError
from finfusion.features.normalize import FittedNormalizer
from finfusion.samples.contract import LABEL, ORIGIN_US, PAST, PAST_MASK, SYMBOL_INDEX, TEXT_AGE, TEXT_EMB, TEXT_MASK

#: Split name -> [start, end) of target days.
ACL18_SPLITS: dict[str, tuple[date, date]] = {
    "train": (date(2014, 1, 1), date(2015, 8, 1)),
    "dev": (date(2015, 8, 1), date(2015, 10, 1)),
    "test": (date(2015, 10, 1), date(2016, 1, 1)),
}
#: Where a target's label comes from: the sign of its move (with the dead band), or the bars' own `label` column.
LABEL_SOURCES = ("move", "given")
#: The split names, in time order.
SPLIT_NAMES = ("train", "dev", "test")
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
class DailyMovementConfig:
    """The lag window (max_n_days), texts kept per step (max_n_msgs), the dead band, the movement rounding (None:
    none), the horizon k in bars and the date splits (name -> [start, end), in the order train, dev, test)."""

    lag_days: int = 5
    max_tweets: int = 30
    up_threshold: float = 0.0055
    down_threshold: float = 0.005
    decimals: int | None = 6
    horizon: int = 1
    splits: tuple[tuple[str, date, date], ...] = tuple((name, *span) for name, span in ACL18_SPLITS.items())
    label: str = "move"

    def __post_init__(self) -> None:
        if self.lag_days < 1 or self.max_tweets < 1 or self.horizon < 1:
            raise FinfusionError("daily movement config: lag_days, max_tweets and horizon must be at least 1")
        if self.up_threshold < 0 or self.down_threshold < 0:
            raise FinfusionError("daily movement config: the dead-band thresholds are magnitudes and must be >= 0")
        if self.label not in LABEL_SOURCES:
            raise FinfusionError(f"daily movement config: label '{self.label}': use {' or '.join(LABEL_SOURCES)}")
        if self.label == "given" and (self.up_threshold or self.down_threshold):
            raise FinfusionError("daily movement config: a given label has no dead band (set both thresholds to 0)")
        if tuple(name for name, _, _ in self.splits) != SPLIT_NAMES:
            raise FinfusionError(f"daily movement config: the splits must be {', '.join(SPLIT_NAMES)}, in that order")
        ends = [date.min, *(end for _, _, end in self.splits[:-1])]
        if any(end <= start or start < previous for (_, start, end), previous in zip(self.splits, ends, strict=True)):
            spans = ", ".join(f"{name} [{start}, {end})" for name, start, end in self.splits)
            raise FinfusionError(f"daily movement config: the splits must be non-empty and in time order: {spans}")

    @property
    def spans(self) -> dict[str, tuple[date, date]]:
        """Split name -> [start, end) of its target days."""
        return {name: (start, end) for name, start, end in self.splits}

    @property
    def train_end(self) -> date:
        """The end of the train split: the price normaliser is fitted on bars before it."""
        return self.spans["train"][1]


def dead_band_labels(moves: np.ndarray, config: DailyMovementConfig) -> np.ndarray:
    """Labels [M] int64 of movements [M]: -1 inside [-down, +up) (dropped), 1 above 1e-7, else 0 (StockNet's rule)."""
    labels = np.where(moves > 1e-7, 1, 0).astype(np.int64)
    labels[(moves >= -config.down_threshold) & (moves < config.up_threshold)] = -1
    return labels


def given_labels(bars: pl.DataFrame) -> np.ndarray:
    """The bars' own `label` column [n] as 1 (up) / 0 (down) / -1 (empty: not a target). A dataset's labels are
    0 / 1 or -1 / +1, never a mix (0 would be ambiguous)."""
    if "label" not in bars.columns:
        raise FinfusionError("data.label 'given': the bars have no label column (ingest it with --map YOURS=label)")
    values = bars["label"].cast(pl.Int64)
    found = set(values.drop_nulls().unique().to_list())
    if not (found <= {0, 1} or found <= {-1, 1}):
        raise FinfusionError(f"data.label 'given': the bars' labels are {sorted(found)}; use 0 / 1 or -1 / +1")
    up = (values > 0).fill_null(False).to_numpy().astype(np.int64)
    return np.where(values.is_null().to_numpy(), -1, up)


def horizon_moves(close: np.ndarray, horizon: int) -> np.ndarray:
    """Movements [n] over `horizon` bars from one-bar moves `close` [n]: prod(1 + close[t : t + horizon]) - 1, NaN
    where a bar is missing or the horizon runs past the last bar."""
    if horizon == 1:
        return close
    out = np.full(close.shape, np.nan)
    if len(close) >= horizon:
        windows = np.lib.stride_tricks.sliding_window_view(1.0 + close, horizon)  # [n - horizon + 1, horizon]
        out[: len(windows)] = np.prod(windows, axis=1) - 1.0
    return out


def session_days(ts: pl.Series) -> np.ndarray:
    """Exchange dates [n] datetime64[D] of daily bars closing at `ts` (UTC)."""
    return ts.dt.convert_time_zone(EXCHANGE_TZ).dt.date().to_numpy().astype("datetime64[D]")


def split_of(days: np.ndarray, config: DailyMovementConfig) -> np.ndarray:
    """Split name [M] of target days [M] datetime64[D] ("" outside every split)."""
    out = np.full(days.shape, "", dtype=object)
    for name, start, end in config.splits:
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
class DailyMovementSamples:
    """All targets of the benchmark (M rows) with their inputs; `dataset(split)` serves one split.

    targets: frame [M rows: symbol, day, split, movement, previous_move (the horizon's move ending at day t-1, NaN
    before the history allows it), lag_mean_move (mean one-bar move of the lag days), label, steps]; price [M, L, C]
    float32 (normalised); step_mask [M, L] bool; tweet_index [M, L, N] int64 rows of `vectors` (-1 on padding);
    tweet_age [M, L, N] float32; vectors [U, D] float32; symbols [S]; symbol_index, labels, origin_us [M] int64;
    `normalizer` of the price channels (fitted before the train split's end, or the one given to
    `build_daily_movement`); `texts` the texts given to `build_daily_movement` (symbol, day, published_at, row and
    what the caller added, e.g. id and title: which text a row of `vectors` is, for explanations); `has_texts`
    False for a price-only dataset (its samples carry no text keys).
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
    config: DailyMovementConfig
    normalizer: FittedNormalizer
    texts: pl.DataFrame
    has_texts: bool = True

    def rows(self, split: str) -> np.ndarray:
        """Positions [M_split] of the targets of `split`."""
        if split not in SPLIT_NAMES:
            raise FinfusionError(f"unknown split '{split}': use {', '.join(SPLIT_NAMES)}")
        return np.flatnonzero(self.targets["split"].to_numpy() == split)

    def counts(self) -> dict[str, int]:
        """Targets per split."""
        return {name: len(self.rows(name)) for name in SPLIT_NAMES}

    def up_rate(self) -> float:
        """Share of up labels over all targets."""
        return float(self.labels.mean())

    def dataset(self, split: str) -> DailyMovementDataset:
        return DailyMovementDataset(self, self.rows(split))

    def text_counts(self) -> np.ndarray:
        """Texts seen by each target [M] (over all its steps)."""
        return (self.tweet_index >= 0).sum(axis=(1, 2))

    def every_step_has_text(self) -> np.ndarray:
        """Whether each target [M] has a text on every step of its window (StockNet's published code keeps only
        these)."""
        has = (self.tweet_index >= 0).any(axis=2)  # [M, L]
        return np.all(has | ~self.step_mask, axis=1)

    def restricted(self, keep: np.ndarray) -> DailyMovementSamples:
        """Only the targets where `keep` [M] bool is True (every split alike)."""
        return replace(
            self,
            targets=self.targets.filter(pl.Series(keep)),
            price=self.price[keep],
            step_mask=self.step_mask[keep],
            tweet_index=self.tweet_index[keep],
            tweet_age=self.tweet_age[keep],
            symbol_index=self.symbol_index[keep],
            labels=self.labels[keep],
            origin_us=self.origin_us[keep],
        )

    def without_texts(self) -> DailyMovementSamples:
        """The same targets with every text removed (a price-only twin of a text model: same inputs, no text)."""
        return replace(self, tweet_index=np.full_like(self.tweet_index, -1), tweet_age=np.zeros_like(self.tweet_age))


def build_daily_movement(
    bars: pl.DataFrame,
    texts: pl.DataFrame | None,
    vectors: np.ndarray | None,
    config: DailyMovementConfig | None = None,
    normalizer: FittedNormalizer | None = None,
) -> DailyMovementSamples:
    """The samples of daily `bars` [symbol, ts, open, high, low, close, adj_close, volume] and `texts`
    [symbol, day (the day it counts after), published_at (UTC), row (of `vectors` [U, D]), any further columns
    kept as they are] (see the module docstring); `texts` None: prices only (the samples carry no text keys)."""
    has_texts = texts is not None
    if texts is None or vectors is None:
        schema = {"symbol": pl.String, "day": pl.Date, "published_at": pl.Datetime("us", "UTC"), "row": pl.Int64}
        texts, vectors = pl.DataFrame(schema=schema), np.zeros((0, 1), dtype=np.float32)
    config = config or DailyMovementConfig()
    missing = {"symbol", "day", "published_at", "row"} - set(texts.columns)
    if missing:
        raise FinfusionError(f"ACL18 texts lack column(s) {sorted(missing)}")
    _check_published_before_day_end(texts)
    bars = bars.sort("symbol", "ts")
    features = price_features(bars)
    if normalizer is None:
        normalizer = FittedNormalizer.fit(
            features, "zscore", features["ts"].min(), config.train_end, columns=list(PRICE_CHANNELS)
        )
    scaled = normalizer.transform(features).select(PRICE_CHANNELS).to_numpy().astype(np.float32)
    raw_close = features["close"].to_numpy()
    given = given_labels(bars) if config.label == "given" else np.full(bars.height, -1, dtype=np.int64)
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
            given[bounds[s] : bounds[s + 1]],
            scaled[bounds[s] : bounds[s + 1]],
            tweets.get(symbol),
            config,
        )
        for s, symbol in enumerate(symbols)
    ]
    parts = [p for p in parts if p is not None]
    if not parts:
        spans = ", ".join(f"{name} [{start}, {end})" for name, start, end in config.splits)
        raise FinfusionError(f"no target day in the splits ({spans}) has a full lookback window and a label")
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    targets = pl.DataFrame(
        {
            "symbol": [symbols[i] for i in merged["symbol"]],
            "day": merged["day"].astype("datetime64[D]"),
            "split": split_of(merged["day"], config).astype(str),
            "movement": merged["movement"],
            "previous_move": merged["previous_move"],
            "lag_mean_move": merged["lag_mean_move"],
            "label": merged["label"],
            "steps": merged["step_mask"].sum(axis=1),
        },
        schema_overrides={"day": pl.Date, "split": pl.String},
    )
    return DailyMovementSamples(
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
        has_texts=has_texts,
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
    given: np.ndarray,
    price: np.ndarray,
    tweets: _SymbolTweets | None,
    config: DailyMovementConfig,
) -> dict[str, np.ndarray] | None:
    """The targets of one symbol with `days` [n], raw one-bar close moves [n], given labels [n] (1 / 0, -1: none)
    and scaled price channels [n, C]."""
    lag, first_day, last_day = config.lag_days, config.splits[0][1], config.splits[-1][2]
    has_move = np.flatnonzero(np.isfinite(close))
    if has_move.size == 0:
        return None
    moves = horizon_moves(close, config.horizon)
    if config.decimals is not None:
        moves = np.round(moves, config.decimals)
    positions = np.arange(len(days))
    first_step = np.searchsorted(days, days - (lag - 1) * _DAY, side="left")  # [n]
    label_end = days[np.minimum(positions + config.horizon - 1, len(days) - 1)]  # [n] day of a label's last bar
    keep = (
        (days >= np.datetime64(first_day))
        & (days < np.datetime64(last_day))
        & np.isfinite(moves)
        & (days[has_move[0]] < days - (lag - 1) * _DAY)
        & (split_of(days, config) == split_of(label_end, config))
    )
    labels = given if config.label == "given" else dead_band_labels(np.nan_to_num(moves), config)
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
    seen = np.where(step_mask, close[np.maximum(bar - 1, 0)], np.nan)  # [M, L] one-bar moves of the lag days
    previous = np.where(target >= config.horizon, moves[np.maximum(target - config.horizon, 0)], np.nan)
    return {
        "symbol": np.full(len(target), symbol_index, dtype=np.int64),
        "day": days[target],
        "movement": moves[target],
        "previous_move": previous,
        "lag_mean_move": np.nansum(seen, axis=1) / np.maximum(np.isfinite(seen).sum(axis=1), 1),
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
    config: DailyMovementConfig,
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


class DailyMovementDataset(Dataset[dict[str, torch.Tensor]]):
    """One split of `DailyMovementSamples`: item i is the sample dict of target `rows[i]` (see the module docstring).

    `batch(items)` builds a whole batch at once ([B, ...] shapes); `loader` serves batches that way.
    """

    def __init__(self, samples: DailyMovementSamples, rows: np.ndarray) -> None:
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
        batch = {
            PAST: torch.from_numpy(s.price[rows]),
            PAST_MASK: torch.from_numpy(s.step_mask[rows]),
            LABEL: torch.from_numpy(s.labels[rows]),
            SYMBOL_INDEX: torch.from_numpy(s.symbol_index[rows]),
            ORIGIN_US: torch.from_numpy(s.origin_us[rows]),
        }
        if not s.has_texts:
            return batch
        index = s.tweet_index[rows]  # [B, L, N]
        emb = np.zeros((*index.shape, s.vectors.shape[1]), dtype=np.float32)  # [B, L, N, D]
        emb[index >= 0] = s.vectors[index[index >= 0]]
        return {
            **batch,
            TEXT_EMB: torch.from_numpy(emb),
            TEXT_MASK: torch.from_numpy(index >= 0),
            TEXT_AGE: torch.from_numpy(s.tweet_age[rows]),
        }

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([item]).items()}

    def loader(self, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        """Batches of `batch_size` built at once by `__getitems__`, reshuffled each epoch from `seed` when asked."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=_as_batch)


def _as_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The collate function of `DailyMovementDataset.loader`: `__getitems__` already stacked the batch."""
    return batch
