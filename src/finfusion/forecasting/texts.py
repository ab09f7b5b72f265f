"""The `texts` option of the data part: embed the dataset's texts (cached) and align them to the panel's bars.

    texts:
      enabled: false
      dataset: null        # text dataset in the lake (default: the bars dataset's name)
      encoder: null        # default MiniLM (offline); or a local model folder
      window: 1            # sessions of news a bar sees (texts published strictly before its close)
      max_texts: 8         # N, the most recent texts kept per window
      scope: symbol        # or market: every symbol sees every text
      batch_size: 64       # embedding batch size
      tokens: null         # a tokenizer (e.g. all-MiniLM-L6-v2 or a local model folder): also give token ids
      max_tokens: 64       # S, tokens kept per text

Windows then also carry `text_emb` [N, D] and `text_mask` [N] (samples/text_windows.py), and with `tokens`
`text_ids` [N, S] and `text_ids_mask` [N, S], which models with a text encoder in the loop (the multimodal `full`
preset: MiniLM + LoRA) read instead of the embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from finfusion.data.lake import Lake
from finfusion.features.align import AlignedText, align_texts_to_bars, bars_calendar
from finfusion.features.text import embedded_texts
from finfusion.features.text_tokens import tokenize_by_id
from finfusion.models.multimodal.text_encoder import load_tokenizer
from finfusion.samples.text_windows import TextWindowDataset
from finfusion.samples.windows import Panel, WindowDataset

TEXT_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "dataset": None,
    "encoder": None,
    "window": 1,
    "max_texts": 8,
    "scope": "symbol",
    "batch_size": 64,
    "tokens": None,
    "max_tokens": 64,
}


def permuted_contents(hashed: pl.DataFrame, embeddings: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The placebo's texts: every distinct text (hash) takes the embedding and the document of another, by a seeded
    permutation. Each text keeps its publication time, symbols and place in the windows, so the days with news and
    their counts stay as they are; what the news says is shuffled across dates (and symbols)."""
    order = embeddings.sort("text_hash")
    picked = np.random.default_rng(seed).permutation(order.height)
    donor = dict(zip(order["text_hash"].to_list(), order["text_hash"].gather(picked).to_list(), strict=True))
    document = dict(hashed.unique("text_hash", keep="first").select("text_hash", "document").iter_rows())
    given = {text: document[donor[text]] for text in donor}
    shuffled = order.with_columns(order["vector"].gather(picked))
    return hashed.with_columns(
        pl.col("text_hash").replace_strict(given, return_dtype=pl.String).alias("document")
    ), shuffled


def align_panel_texts(options: Mapping[str, Any], panel: Panel, placebo_seed: int | None = None) -> AlignedText | None:
    """Texts of the data part aligned to every bar of `panel` (None when texts are not enabled); with `placebo_seed`,
    the placebo's texts (`permuted_contents`)."""
    texts_opts = options["texts"]
    if not texts_opts["enabled"]:
        return None
    lake = Lake(options["lake"])
    dataset = str(texts_opts["dataset"] or options["dataset"])
    hashed, embeddings = embedded_texts(lake, dataset, texts_opts["encoder"], int(texts_opts["batch_size"]))
    if placebo_seed is not None:
        hashed, embeddings = permuted_contents(hashed, embeddings, placebo_seed)
    calendar = bars_calendar(lake, str(options["dataset"]), panel.frame["ts"])
    aligned = align_texts_to_bars(
        panel.frame.select("symbol", "ts"),
        hashed,
        embeddings,
        calendar,
        window=int(texts_opts["window"]),
        max_texts=int(texts_opts["max_texts"]),
        scope=texts_opts["scope"],
    )
    if texts_opts["tokens"] is None:
        return aligned
    tokenizer = load_tokenizer(str(texts_opts["tokens"]))
    tokens = tokenize_by_id(
        hashed["id"].to_list(), hashed["document"].to_list(), tokenizer, int(texts_opts["max_tokens"])
    )
    return dataclasses.replace(aligned, tokens=tokens)


def with_texts(windows: WindowDataset, aligned: AlignedText | None) -> WindowDataset | TextWindowDataset:
    """`windows` with their aligned texts (unchanged when there are none)."""
    return windows if aligned is None else TextWindowDataset(windows, aligned)
