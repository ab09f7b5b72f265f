"""Daily movement samples read from the lake (samples/daily_movement.py): a bars dataset's daily bars and, when given,
a text dataset with its cached sentence embeddings (texts not embedded yet are embedded first, each once).

A text's day (the day whose next trading day it counts towards):
- `published` (any dataset): the session of the first bar of the dataset closing strictly after its publication, so a
  text published during a session, or after its close, or over a weekend, reaches the next decision; texts published
  after the last bar are not used;
- `stocknet_files` (the StockNet benchmark): the date of its StockNet file, as published.

Scope: `symbol` gives a symbol the texts that name it and the market-wide ones (no symbol); `market` gives every
symbol every text. Titles and ids are kept (explanations name the texts).

The adjusted close is the dataset's `adj_close`; a dataset without one uses close x adj_factor, or the close where it
has neither column (a partly empty column is an error naming its first empty row).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import polars as pl

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError, LakeError
from finfusion.features.normalize import FittedNormalizer
from finfusion.features.text import embed_texts, load_embeddings, load_encoder, vector_matrix, with_text_hash
from finfusion.samples.daily_movement import (
    DailyMovementConfig,
    DailyMovementSamples,
    build_daily_movement,
    session_days,
    stocknet_file_days,
)

TextDays = Literal["published", "stocknet_files"]
TextScope = Literal["symbol", "market"]
TEXT_DAYS: tuple[str, ...] = ("published", "stocknet_files")
TEXT_SCOPES: tuple[str, ...] = ("symbol", "market")


def embedded_texts(lake: Lake, dataset: str, encoder: str) -> pl.DataFrame:
    """The text dataset with `text_hash`, after embedding with `encoder` the texts that have no cached embedding."""
    texts = with_text_hash(lake.read("text", dataset))
    try:
        load_embeddings(lake, encoder, texts["text_hash"])
    except LakeError:
        embed_texts(lake, texts.select("title", "body"), load_encoder(encoder))
    return texts


def with_adjusted_close(bars: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """`bars` with a complete `adj_close` (see the module docstring)."""
    for column in ("adj_close", "adj_factor"):
        if column in bars.columns and bars[column].null_count() < bars.height:
            if bars[column].null_count():
                row = bars.with_row_index("row").filter(pl.col(column).is_null()).row(0, named=True)
                raise FinfusionError(
                    f"bars/{dataset}: {column} is empty for {row['symbol']} at {row['ts']} but set elsewhere"
                )
            if column == "adj_factor":
                return bars.with_columns((pl.col("close") * pl.col("adj_factor")).alias("adj_close"))
            return bars
    return bars.with_columns(pl.col("close").alias("adj_close"))


def published_days(published_at: pl.Series, bar_ts: pl.Series) -> pl.Series:
    """The session day of the first bar closing strictly after each publication instant (null after the last bar)."""
    closes = np.unique(bar_ts.dt.epoch("us").to_numpy())
    sessions = session_days(pl.Series(closes).cast(pl.Datetime("us", "UTC")))
    position = np.searchsorted(closes, published_at.dt.epoch("us").to_numpy(), side="right")
    inside = position < len(closes)
    days = np.where(inside, sessions[np.minimum(position, len(closes) - 1)], np.datetime64("NaT"))
    return pl.Series("day", days.astype("datetime64[D]"), dtype=pl.Date)


def sample_texts(
    lake: Lake, dataset: str, encoder: str, bars: pl.DataFrame, symbols: list[str], text_days: str, scope: str
) -> tuple[pl.DataFrame, np.ndarray]:
    """Texts [symbol, day, published_at, row, id, title] for the builder and their vectors [U, D]."""
    if text_days not in TEXT_DAYS or scope not in TEXT_SCOPES:
        raise FinfusionError(
            f"data.text_days '{text_days}' / data.text_scope '{scope}': use {' or '.join(TEXT_DAYS)} / "
            f"{' or '.join(TEXT_SCOPES)}"
        )
    texts = embedded_texts(lake, dataset, encoder)
    if text_days == "stocknet_files":
        texts = texts.with_columns(stocknet_file_days(texts["source_ref"]))
    else:
        texts = texts.with_columns(published_days(texts["published_at"], bars["ts"])).filter(
            pl.col("day").is_not_null()
        )
    everyone = pl.lit(symbols, dtype=pl.List(pl.String))
    if scope == "market":
        texts = texts.with_columns(everyone.alias("symbols"))
    else:
        texts = texts.with_columns(pl.when(pl.col("symbols").list.len() == 0).then(everyone).otherwise("symbols"))
    texts = texts.explode("symbols")
    embeddings = load_embeddings(lake, encoder, texts["text_hash"])
    rows = embeddings.select("text_hash").with_row_index("row")
    texts = texts.join(rows, on="text_hash", how="left").select(
        pl.col("symbols").alias("symbol"),
        "day",
        "published_at",
        pl.col("row").cast(pl.Int64),
        "id",
        pl.coalesce("title", "body").fill_null("").alias("title"),
    )
    return texts, vector_matrix(embeddings["vector"])


@dataclass(frozen=True)
class DailyInputs:
    """What the builder reads: daily bars with a complete adj_close, and the texts [symbol, day, published_at, row,
    id, title] with their vectors [U, D] (None, None: prices only)."""

    bars: pl.DataFrame
    texts: pl.DataFrame | None
    vectors: np.ndarray | None

    def build(self, config: DailyMovementConfig, normalizer: FittedNormalizer | None = None) -> DailyMovementSamples:
        """The samples of `config`'s splits; the price channels scaled with `normalizer` when given (a trained
        run's), else with one fitted before the train split's end."""
        return build_daily_movement(self.bars, self.texts, self.vectors, config, normalizer)

    def with_texts_permuted(self, seed: int) -> DailyInputs:
        """The placebo: every text keeps its symbol, day and publication time, its content (vector row, id, title)
        is another text's, drawn by a seeded permutation of all texts, so what a text says no longer belongs to its
        date (identical texts on different days get different contents)."""
        if self.texts is None:
            raise FinfusionError("a price-only dataset has no texts to permute")
        order = np.random.default_rng(seed).permutation(self.texts.height)
        content = [c for c in ("row", "id", "title") if c in self.texts.columns]
        permuted = self.texts.with_columns(pl.col(c).gather(order) for c in content)
        return replace(self, texts=permuted)


def read_daily_inputs(
    lake: Lake, dataset: str, texts: str | None, encoder: str, text_days: str = "published", scope: str = "symbol"
) -> DailyInputs:
    """bars/`dataset`/1d and the texts of text/`texts` (None: prices only) with their `encoder` embeddings."""
    bars = with_adjusted_close(lake.read("bars", dataset, freq="1d"), dataset)
    if texts is None:
        return DailyInputs(bars, None, None)
    symbols = sorted(bars["symbol"].unique().to_list())
    return DailyInputs(bars, *sample_texts(lake, texts, encoder, bars, symbols, text_days, scope))


def load_daily_movement(
    lake: Lake,
    dataset: str,
    texts: str | None,
    encoder: str,
    config: DailyMovementConfig,
    normalizer: FittedNormalizer | None = None,
    text_days: str = "published",
    scope: str = "symbol",
) -> DailyMovementSamples:
    """The samples of bars/`dataset`/1d with the texts of text/`texts` (None: prices only); see `read_daily_inputs`
    and `DailyInputs.build`."""
    return read_daily_inputs(lake, dataset, texts, encoder, text_days, scope).build(config, normalizer)
