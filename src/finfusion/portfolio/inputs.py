"""Read what a portfolio experiment needs from the lake, and build its timeline data, splits and loaders.

The `data` part of a portfolio experiment (see configs/experiment/cga_daily.yaml):

    bars: NAME            bars dataset in the lake, at frequency `freq` (1d, 3m, ...)
    features: NAME|null   features dataset in the lake; null computes them from the bars (`features.bars`)
    texts: NAME|null      text dataset (null: no news, for the price-only twin)
    encoder: NAME         text encoder whose cached embeddings are used; texts not embedded yet are embedded first
    symbols: [...]|null   the universe, in order (null: every symbol of the bars, sorted)
    inputs, lookback, horizon, stride   the windows (`samples.portfolio.PortfolioConfig`)
    train_end, val_end    training windows end (future included) before train_end, validation windows start there
                          and end before val_end, test windows start at val_end; the normaliser is fitted on
                          bars before train_end
    batch_size
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from torch.utils.data import DataLoader

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError, LakeError
from finfusion.features.bars import build_features
from finfusion.features.normalize import FittedNormalizer
from finfusion.features.text import embed_texts, load_embeddings, load_encoder, with_text_hash
from finfusion.samples.portfolio import (
    ContiguousBatches,
    PortfolioConfig,
    PortfolioData,
    PortfolioDataset,
    build_portfolio_data,
)
from finfusion.samples.windows import collate


@dataclass(frozen=True)
class PortfolioInputs:
    """Bars [symbol, ts, ...], features [symbol, ts, ...] and, with news, texts (with `text_hash`) and embeddings."""

    bars: pl.DataFrame
    features: pl.DataFrame
    texts: pl.DataFrame | None
    embeddings: pl.DataFrame | None


def load_inputs(lake: Lake, data_cfg: Mapping[str, Any], *, news: bool) -> PortfolioInputs:
    """The universe's bars and features and, when `news`, its texts and their embeddings (embedding missing ones)."""
    symbols = data_cfg.get("symbols")
    universe = None if symbols is None else [str(s) for s in symbols]
    bars = lake.read("bars", data_cfg["bars"], freq=data_cfg["freq"], symbols=universe)
    if data_cfg.get("features"):
        features = lake.read("features", data_cfg["features"], freq=data_cfg["freq"], symbols=universe)
    else:
        features = build_features(bars)
    if not news:
        return PortfolioInputs(bars, features, None, None)
    if not data_cfg.get("texts"):
        raise FinfusionError("the model reads news but the data part names no `texts` dataset")
    texts = lake.read("text", data_cfg["texts"])
    if universe is not None:
        texts = texts.filter(pl.col("symbols").list.eval(pl.element().is_in(universe)).list.any())
    texts = with_text_hash(texts)
    encoder = str(data_cfg.get("encoder", "all-MiniLM-L6-v2"))
    try:
        embeddings = load_embeddings(lake, encoder, texts["text_hash"])
    except LakeError:
        embed_texts(lake, texts, load_encoder(encoder))
        embeddings = load_embeddings(lake, encoder, texts["text_hash"])
    return PortfolioInputs(bars, features, texts, embeddings)


def window_config(
    data_cfg: Mapping[str, Any], *, require_future: bool = True, stride: int | None = None
) -> PortfolioConfig:
    """The `PortfolioConfig` of the data part (its stride unless `stride` is given)."""
    return PortfolioConfig(
        lookback=int(data_cfg["lookback"]),
        horizon=int(data_cfg["horizon"]),
        stride=int(stride if stride is not None else data_cfg.get("stride", 1)),
        inputs=tuple(str(c) for c in data_cfg["inputs"]),
        train_end=data_cfg.get("train_end"),
        require_future=require_future,
    )


def build_data(
    inputs: PortfolioInputs,
    config: PortfolioConfig,
    *,
    normalizer: FittedNormalizer | None = None,
    symbols: Sequence[str] | None = None,
) -> PortfolioData:
    """The universe on its timeline (`samples.portfolio.build_portfolio_data`) from loaded inputs."""
    return build_portfolio_data(
        inputs.bars,
        config,
        features=inputs.features,
        texts=inputs.texts,
        embeddings=inputs.embeddings,
        symbols=symbols,
        normalizer=normalizer,
    )


@dataclass(frozen=True)
class Splits:
    """Training, validation and test windows of one dataset (see the module docstring for the bounds)."""

    train: PortfolioDataset
    val: PortfolioDataset
    test: PortfolioDataset


def split_windows(dataset: PortfolioDataset, data_cfg: Mapping[str, Any]) -> Splits:
    """Purged splits at `train_end` and `val_end`; raises FinfusionError when training or validation is empty."""
    train_end, val_end = data_cfg["train_end"], data_cfg["val_end"]
    splits = Splits(dataset.split(end=train_end), dataset.split(train_end, val_end), dataset.split(val_end))
    for name, part in (("training", splits.train), ("validation", splits.val)):
        if len(part) == 0:
            raise FinfusionError(f"no {name} windows: check train_end ({train_end}) and val_end ({val_end})")
    return splits


def span_bounds(data_cfg: Mapping[str, Any], span: str) -> tuple[Any, Any]:
    """The (start, end) decision instants of a span (None: open): test from `val_end`, val from `train_end` to
    `val_end`, train before `train_end`, all of them."""
    bounds = {
        "test": (data_cfg["val_end"], None),
        "val": (data_cfg["train_end"], data_cfg["val_end"]),
        "train": (None, data_cfg["train_end"]),
        "all": (None, None),
    }
    if span not in bounds:
        raise FinfusionError(f"unknown span '{span}'; choose one of {', '.join(bounds)}")
    return bounds[span]


def loader(dataset: PortfolioDataset, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """Batches of consecutive decisions (`ContiguousBatches`), in random order when `shuffle`."""
    sampler = ContiguousBatches(len(dataset), batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
