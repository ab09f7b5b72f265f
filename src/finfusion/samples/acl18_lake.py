"""The StockNet (ACL18) samples read from the lake: daily bars, the texts with their StockNet file days (their ids and
titles kept, for explanations), and the texts' cached sentence embeddings (texts not embedded yet are embedded
first, each once)."""

from __future__ import annotations

import polars as pl

from finfusion.data.lake import Lake
from finfusion.errors import LakeError
from finfusion.features.normalize import FittedNormalizer
from finfusion.features.text import embed_texts, load_embeddings, load_encoder, vector_matrix, with_text_hash
from finfusion.samples.acl18 import ACL18Config, ACL18Samples, build_acl18, stocknet_file_days


def embedded_texts(lake: Lake, dataset: str, encoder: str) -> pl.DataFrame:
    """The text dataset with `text_hash`, after embedding with `encoder` the texts that have no cached embedding."""
    texts = with_text_hash(lake.read("text", dataset))
    try:
        load_embeddings(lake, encoder, texts["text_hash"])
    except LakeError:
        embed_texts(lake, texts.select("title", "body"), load_encoder(encoder))
    return texts


def load_acl18(
    lake: Lake, dataset: str, encoder: str, config: ACL18Config, normalizer: FittedNormalizer | None = None
) -> ACL18Samples:
    """The benchmark samples from bars/`dataset`/1d, text/`dataset` and its `encoder` embeddings; the price channels
    are scaled with `normalizer` when given (a trained run's), else with one fitted before the train split's end."""
    bars = lake.read("bars", dataset, freq="1d")
    texts = embedded_texts(lake, dataset, encoder)
    texts = texts.with_columns(stocknet_file_days(texts["source_ref"])).explode("symbols")
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
    return build_acl18(bars, texts, vector_matrix(embeddings["vector"]), config, normalizer)
