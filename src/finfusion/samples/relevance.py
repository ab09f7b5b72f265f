"""Relevance samples (seed 004): one sample per stock and week, a context vector and a stock vector, and labels from
the forward returns over `horizons` calendar days.

Decision instants: the last bar of each calendar week (Monday to Sunday) of each stock, within [`start`, `end`) when
given; a trailing week of the data counts only when its last bar falls on a Friday or later (otherwise more bars of
that week may still come). Labels may read bars after `end`.

Context vector (groups `news`, `policy`, `macro`):
- `news`: the mean embedding of the stock's texts published in (t - `texts.window_days`, t], reduced to
  `texts.components` dimensions by a PCA fitted on the training span's weeks that have news (0 where a week has
  none), and `news_count` = log(1 + number of texts);
- `policy`, `macro`: for each series named in `series.policy` / `series.macro`, its level, change and release age as
  of t (features/series_asof.py: only vintages published by t).

Stock vector (groups `ohlcv`, `technical`, `returns`, `volatility`): the bar features (features/bars.py, each computed
from bars at or before its own) of the decision bar.

Labels, per horizon h: r_h = log(adjusted close of the last bar at or before t + h days) - log(close at t), known
when the stock has a bar at or after t + h days; `relevance` = tanh(r_h / s_h) in [-1, 1] with s_h the standard
deviation of r_h over the training samples; `direction` = 1 when r_h > 0. Features are z-scored with the training
samples' statistics. Everything fitted (PCA, z-scores, label scales, split instants, universe) is the `state`,
fitted only on training samples and reused as stored afterwards; it names the feature groups as lists of
[group, feature names] pairs in the columns' order (`feature_groups` reads them), an order that a JSON object's keys
would lose (state.json is written with sorted keys).

Splits (embargo of the longest horizon): training samples have t + max(h) days before `train_end`; validation
samples start at `train_end` and have t + max(h) days before `val_end`; test samples start at `val_end`.

Samples (samples/contract.py): `context` [Fc], `stock` [Fs], `relevance` [K], `direction` [K] int64, `label_mask`
[K] bool, `forward_return` [K] (r_h, NaN when unknown), `symbol_index`, `origin_us`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from finfusion.config import plain
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.features.bars import FeatureConfig, build_features
from finfusion.features.series_asof import series_feature_names, series_features
from finfusion.samples.contract import (
    CONTEXT,
    DIRECTION,
    FORWARD_RETURN,
    LABEL_MASK,
    ORIGIN_US,
    PAST_RETURN,
    RELEVANCE,
    STOCK,
    SYMBOL_INDEX,
)
from finfusion.samples.portfolio import instant_us
from finfusion.samples.tensors import TensorSamples
from finfusion.samples.windows import LOG_RETURN, build_panel

US_PER_DAY = 86_400_000_000
FRIDAY = 4

RELEVANCE_DEFAULTS: dict[str, Any] = {
    "source": "lake",
    "dataset": "synthetic",
    "freq": "1d",
    "lake": None,
    "symbols": None,
    "start": None,
    "end": None,
    "horizons": [7, 30],
    "texts": {"enabled": True, "dataset": None, "encoder": None, "components": 8, "window_days": 7, "batch_size": 64},
    "series": {"dataset": None, "policy": [], "macro": []},
    "split": {"train": 0.6, "val": 0.2},
    "batch_size": 32,
    "num_workers": 0,
    "synthetic": {},
}

#: Seed 004's stock groups, filled with the bar features of features/bars.py.
STOCK_GROUPS: dict[str, tuple[str, ...]] = {
    "ohlcv": ("gap", "body", "range_hl", "close_pos", "volume_z_20"),
    "technical": (
        "rsi_14", "macd", "macd_signal", "macd_hist", "atr_14", "bb_pos_20",
        "ma_ratio_5", "ma_ratio_20", "ma_ratio_60", "vol_imb_5", "vol_imb_20",
    ),
    "returns": ("ret_1", "ret_5", "ret_20", "ret_z_20", "ret_z_60"),
    "volatility": ("rv_5", "rv_20", "rv_60", "rv_z_20"),
}  # fmt: skip
CONTEXT_GROUPS = ("news", "policy", "macro")


def relevance_options(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The data part as a plain dict with `RELEVANCE_DEFAULTS` filling what it leaves out."""
    merged = OmegaConf.merge(OmegaConf.create(RELEVANCE_DEFAULTS), OmegaConf.create(plain(cfg)))
    options = OmegaConf.to_container(merged, resolve=True)
    horizons = [int(h) for h in options["horizons"]]
    if not horizons or min(horizons) < 1 or len(set(horizons)) != len(horizons):
        raise FinfusionError(f"data.horizons must be distinct positive numbers of days, got {options['horizons']}")
    options["horizons"] = horizons
    return options


@dataclass
class RawSamples:
    """Unnormalised samples [N]: `symbol_index`, `origin_us`, `stock` [N, Fs], `news_mean` [N, D] (None without
    texts), `news_count` [N], `series` [N, Fx] with `series_names`, `forward_return` [N, K] and `past_return`
    [N, K] (the return over the h days up to t)."""

    symbols: tuple[str, ...]
    symbol_index: np.ndarray
    origin_us: np.ndarray
    stock: np.ndarray
    news_mean: np.ndarray | None
    news_count: np.ndarray
    series: np.ndarray
    series_names: list[str]
    forward_return: np.ndarray
    past_return: np.ndarray


def weekly_decisions(ts_us: np.ndarray) -> np.ndarray:
    """Positions of the last bar of each calendar week in sorted bar instants `ts_us` [N] (a trailing week only when
    its last bar falls on a Friday or later)."""
    if ts_us.size == 0:
        return np.zeros(0, dtype=np.int64)
    days = ts_us // US_PER_DAY
    week = (days + 3) // 7  # 1970-01-01 was a Thursday: weeks start on Mondays
    last = np.flatnonzero(np.append(week[1:] != week[:-1], True))
    if (days[-1] + 3) % 7 < FRIDAY:
        last = last[:-1]
    return last


def forward_returns(ts_us: np.ndarray, cum_log: np.ndarray, at: np.ndarray, horizons: Sequence[int]) -> np.ndarray:
    """r_h [len(at), K]: log-price change from bar `at` to the last bar at or before t + h days; NaN when the bars
    do not reach t + h days yet."""
    out = np.full((len(at), len(horizons)), np.nan)
    for k, days in enumerate(horizons):
        target = ts_us[at] + days * US_PER_DAY
        end = np.searchsorted(ts_us, target, side="right") - 1
        known = ts_us[-1] >= target
        out[:, k] = np.where(known, cum_log[end] - cum_log[at], np.nan)
    return out


def backward_returns(ts_us: np.ndarray, cum_log: np.ndarray, at: np.ndarray, horizons: Sequence[int]) -> np.ndarray:
    """[len(at), K]: log-price change over the h days up to bar `at` (from the last bar at or before t - h days);
    NaN when the bars start later. Known at t: the previous-sign baseline reads it."""
    out = np.full((len(at), len(horizons)), np.nan)
    for k, days in enumerate(horizons):
        start = np.searchsorted(ts_us, ts_us[at] - days * US_PER_DAY, side="right") - 1
        out[:, k] = np.where(start >= 0, cum_log[at] - cum_log[np.maximum(start, 0)], np.nan)
    return out


def raw_samples(options: Mapping[str, Any], lake: Lake, symbols: Sequence[str] | None) -> RawSamples:
    """Every stock's weekly samples, unnormalised (module docstring)."""
    dataset, freq = str(options["dataset"]), str(options["freq"])
    bars = lake.read("bars", dataset, freq=freq, symbols=list(symbols) if symbols else None)
    if bars.height == 0:
        raise FinfusionError(f"bars dataset '{dataset}' ({freq}) has no rows for the requested symbols")
    names = [name for group in STOCK_GROUPS.values() for name in group]
    features = build_features(bars, FeatureConfig()).select("symbol", "ts", *names)
    panel = build_panel(bars, features)
    columns = [panel.columns.index(name) for name in names]
    log_return = panel.columns.index(LOG_RETURN)
    universe = tuple(symbols) if symbols else tuple(sorted(panel.symbols))
    parts: dict[str, list[np.ndarray]] = {
        "symbol_index": [], "origin_us": [], "stock": [], "forward_return": [], "past_return": []}  # fmt: skip
    for i, symbol in enumerate(panel.symbols):
        if symbol not in universe:
            continue
        ts, values = panel.ts[i], panel.values[i]
        cum = np.cumsum(np.nan_to_num(values[:, log_return]))
        at = weekly_decisions(ts)
        parts["symbol_index"].append(np.full(len(at), universe.index(symbol), dtype=np.int64))
        parts["origin_us"].append(ts[at])
        parts["stock"].append(values[at][:, columns])
        parts["forward_return"].append(forward_returns(ts, cum, at, options["horizons"]))
        parts["past_return"].append(backward_returns(ts, cum, at, options["horizons"]))
    joined = {key: np.concatenate(value) for key, value in parts.items()}
    within = np.ones(len(joined["origin_us"]), dtype=bool)
    for bound, keep in ((options["start"], np.greater_equal), (options["end"], np.less)):
        if bound is not None:
            within &= keep(joined["origin_us"], instant_us(bound))
    order = np.lexsort((joined["symbol_index"], joined["origin_us"]))
    order = order[within[order]]
    joined = {key: value[order] for key, value in joined.items()}
    news_mean, news_count = _news(options, lake, bars, universe, joined["symbol_index"], joined["origin_us"])
    series_names, series = _series(options, lake, joined["origin_us"])
    return RawSamples(
        symbols=universe,
        news_mean=news_mean,
        news_count=news_count,
        series=series,
        series_names=series_names,
        **joined,
    )


def _news(
    options: Mapping[str, Any],
    lake: Lake,
    bars: pl.DataFrame,
    universe: Sequence[str],
    symbol_index: np.ndarray,
    origin_us: np.ndarray,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Mean text embedding [N, D] and text count [N] of each sample's window (None and zeros without texts)."""
    texts_opts = options["texts"]
    if not texts_opts["enabled"]:
        return None, np.zeros(len(origin_us))
    from finfusion.features.align import align_texts_to_bars, bars_calendar
    from finfusion.features.text import embedded_texts

    dataset = str(texts_opts["dataset"] or options["dataset"])
    hashed, embeddings = embedded_texts(lake, dataset, texts_opts["encoder"], int(texts_opts["batch_size"]))
    decisions = pl.DataFrame(
        {
            "symbol": [universe[i] for i in symbol_index],
            "ts": pl.Series(origin_us).cast(pl.Datetime("us", "UTC")),
        }
    )
    calendar = bars_calendar(lake, str(options["dataset"]), bars["ts"])
    aligned = align_texts_to_bars(
        decisions,
        hashed,
        embeddings,
        calendar,
        window=timedelta(days=int(texts_opts["window_days"])),
        max_texts=1,
        universe=list(universe),
        scope="symbol",
    )
    return aligned.mean.astype(np.float64), aligned.ids["n_texts"].to_numpy().astype(np.float64)


def _series(options: Mapping[str, Any], lake: Lake, origin_us: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The policy then macro series' features [N, Fx] and their names."""
    wanted = [*options["series"]["policy"], *options["series"]["macro"]]
    if not wanted:
        return [], np.zeros((len(origin_us), 0))
    dataset = str(options["series"]["dataset"] or options["dataset"])
    rows = lake.read("series", dataset)
    features = series_features(rows, wanted, origin_us)
    names = series_feature_names(wanted)
    return names, np.stack([features[name] for name in names], axis=1)


def context_groups(options: Mapping[str, Any], components: int) -> dict[str, list[str]]:
    """Context group -> its feature names (empty groups dropped)."""
    groups = {
        "news": [*(f"news_pc{i + 1}" for i in range(components)), "news_count"] if options["texts"]["enabled"] else [],
        "policy": series_feature_names(options["series"]["policy"]),
        "macro": series_feature_names(options["series"]["macro"]),
    }
    return {group: names for group, names in groups.items() if names}


def split_masks(origin_us: np.ndarray, known: np.ndarray, horizon_days: int, train_end: int, val_end: int) -> dict:
    """Boolean masks [N] of the training, validation and test samples (module docstring); `known` [N]: every label
    of the sample is known."""
    label_end = origin_us + horizon_days * US_PER_DAY
    return {
        "train": known & (label_end < train_end),
        "val": known & (origin_us >= train_end) & (label_end < val_end),
        "test": known & (origin_us >= val_end),
    }


def _context_matrix(raw: RawSamples, pca: Mapping[str, Any] | None) -> np.ndarray:
    """[N, Fc] unnormalised context: projected news and its count, then the series features."""
    parts = []
    if raw.news_mean is not None:
        if pca is None:
            raise FinfusionError("the news projection is missing from the run's state")
        mean, components = np.asarray(pca["mean"]), np.asarray(pca["components"])
        projected = (raw.news_mean - mean) @ components.T
        projected[raw.news_count == 0] = 0.0
        parts += [projected, np.log1p(raw.news_count)[:, None]]
    parts.append(raw.series)
    return np.concatenate(parts, axis=1)


def fit_state(
    raw: RawSamples, options: Mapping[str, Any], train: np.ndarray, train_end: int, val_end: int
) -> dict[str, Any]:
    """Everything fitted on the training samples `train` [N] (module docstring), as JSON-able values."""
    if not train.any():
        raise FinfusionError("the split leaves no training samples (each needs its longest label before train_end)")
    pca = None
    if raw.news_mean is not None:
        from sklearn.decomposition import PCA

        with_news = train & (raw.news_count > 0)
        n_components = min(int(options["texts"]["components"]), int(with_news.sum()), raw.news_mean.shape[1])
        if n_components < 1:
            raise FinfusionError("no training week has news: the news projection cannot be fitted")
        fitted = PCA(n_components=n_components, svd_solver="full").fit(raw.news_mean[with_news])
        pca = {"mean": fitted.mean_.tolist(), "components": fitted.components_.tolist()}
    context = _context_matrix(raw, pca)
    finite = np.isfinite(context).all(axis=1) & np.isfinite(raw.stock).all(axis=1)
    rows = train & finite
    if not rows.any():
        raise FinfusionError("no training sample has every feature (series not yet released, feature warm-up)")
    groups = context_groups(options, 0 if pca is None else len(pca["components"]))
    return {
        "train_end_us": train_end,
        "val_end_us": val_end,
        "symbols": list(raw.symbols),
        "horizons": list(options["horizons"]),
        "context_groups": [[group, names] for group, names in groups.items()],
        "stock_groups": [[group, list(names)] for group, names in STOCK_GROUPS.items()],
        "news_projection": pca,
        "context_mean": context[rows].mean(axis=0).tolist(),
        "context_std": _spread(context[rows]).tolist(),
        "stock_mean": raw.stock[rows].mean(axis=0).tolist(),
        "stock_std": _spread(raw.stock[rows]).tolist(),
        "label_scale": _spread(raw.forward_return[rows]).tolist(),
    }


def feature_groups(state: Mapping[str, Any]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The context and the stock groups of a fitted `state` (group -> its feature names), in the order of the
    samples' columns (`context` [Fc], `stock` [Fs]): the state stores them as [group, feature names] pairs."""
    groups = []
    for key in ("context_groups", "stock_groups"):
        pairs = state[key]
        if not isinstance(pairs, list):
            raise FinfusionError(
                f"the run's state stores {key} without their order (written before the order was stored): train the "
                "run again"
            )
        groups.append({str(group): [str(name) for name in names] for group, names in pairs})
    return groups[0], groups[1]


def _spread(values: np.ndarray) -> np.ndarray:
    std = values.std(axis=0)
    return np.where(std > 0, std, 1.0)


def samples_from(raw: RawSamples, state: Mapping[str, Any]) -> tuple[TensorSamples, np.ndarray]:
    """The normalised samples of the rows with every feature, and the mask [N] of those rows."""
    context = _context_matrix(raw, state["news_projection"])
    names = [name for group in feature_groups(state)[0].values() for name in group]
    if context.shape[1] != len(names):
        raise FinfusionError(f"the run was trained on {len(names)} context features, the data gives {context.shape[1]}")
    finite = np.isfinite(context).all(axis=1) & np.isfinite(raw.stock).all(axis=1)
    context = (context - np.asarray(state["context_mean"])) / np.asarray(state["context_std"])
    stock = (raw.stock - np.asarray(state["stock_mean"])) / np.asarray(state["stock_std"])
    known = np.isfinite(raw.forward_return)
    relevance = np.tanh(np.nan_to_num(raw.forward_return) / np.asarray(state["label_scale"]))
    tensors = {
        CONTEXT: torch.from_numpy(context[finite].astype(np.float32)),
        STOCK: torch.from_numpy(stock[finite].astype(np.float32)),
        RELEVANCE: torch.from_numpy(relevance[finite].astype(np.float32)),
        DIRECTION: torch.from_numpy((raw.forward_return[finite] > 0).astype(np.int64)),
        LABEL_MASK: torch.from_numpy(known[finite]),
        FORWARD_RETURN: torch.from_numpy(raw.forward_return[finite].astype(np.float32)),
        PAST_RETURN: torch.from_numpy(np.nan_to_num(raw.past_return[finite]).astype(np.float32)),
        SYMBOL_INDEX: torch.from_numpy(raw.symbol_index[finite]),
        ORIGIN_US: torch.from_numpy(raw.origin_us[finite]),
    }
    return TensorSamples(tensors), finite
