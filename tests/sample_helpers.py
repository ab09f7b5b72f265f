"""Helpers shared by the sample tests (tests/test_samples.py, test_portfolio_samples.py)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from finfusion.data.calendar import to_us
from finfusion.data.sources.synthetic import SyntheticMarket
from finfusion.features.text import with_text_hash


def texts_with_embeddings(texts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Texts with hashes, and embeddings [text_hash, vector (D=2)] that spell the publication instant: (day number,
    second of the day), both exact in float32."""
    hashed = with_text_hash(texts).unique("text_hash", keep="first").sort("published_at")
    day, second = np.divmod(to_us(hashed["published_at"]) // 1_000_000, 86_400)
    vectors = [[float(d), float(x)] for d, x in zip(day, second, strict=True)]
    embeddings = pl.DataFrame(
        {"text_hash": hashed["text_hash"], "vector": vectors},
        schema={"text_hash": pl.String, "vector": pl.List(pl.Float32)},
    )
    return hashed, embeddings


def perturb_after(market: SyntheticMarket, t: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Bars with every price after t scaled by random factors, and texts with extra news published after t."""
    rng = np.random.default_rng(7)
    after = pl.col("ts") > t
    factor = pl.Series(np.exp(rng.normal(0.0, 0.05, market.bars.height)))
    bars = market.bars.with_columns(
        pl.when(after).then(pl.col(p) * factor).otherwise(pl.col(p)).alias(p)
        for p in ("open", "high", "low", "close", "adj_close")
    ).with_columns(pl.max_horizontal("open", "high", "low", "close").alias("high"))
    extra = market.texts.filter(pl.col("published_at") > t).with_columns(
        pl.col("id") + "-x", pl.col("title") + " (update)", pl.col("published_at") + pl.duration(hours=1)
    )
    return bars, pl.concat([market.texts, extra])
