"""The texts behind a portfolio window's news bins, and the bins rebuilt from them in torch (explanations: a per-text
attribution needs the texts themselves as inputs, not the bins' means).

Shapes: B batch, T texts of the window, D text dim, A assets, L lookback bars.

`window_texts` lists the texts binned to any (asset, bar) of the window of decision row t (bars t - L + 1 .. t; the
binning rule of samples/portfolio.py): their ids, vectors [T, D], bar within the window [T] and the universe assets
they mention [T, A]. `binned_news` turns them back into the sample's `news_emb` [B, A, L, D], `news_mask` [B, A, L]
and `news_coverage` [B, A, L, A]: a text counts in the bin of every asset it mentions at its bar, a bin's embedding
is the mean of its present texts, its coverage the assets any of them mentions. It is linear in the vectors, so
Integrated Gradients over them split each bin's attribution among its texts exactly; switching a text off
(`present`) is the sample without that text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import Tensor

from finfusion.samples.contract import NEWS_COVERAGE, NEWS_EMB, NEWS_MASK
from finfusion.samples.portfolio import PortfolioData, text_mentions


@dataclass(frozen=True)
class WindowTexts:
    """The T texts of one window: `rows` [T rows: id, published_at] in (published_at, id) order, `vectors` [T, D]
    float32, `bar` [T] int64 (0 = the window's oldest bar) and `mentions` [T, A] float32 (one-hot of the universe
    assets each mentions)."""

    rows: pl.DataFrame
    vectors: np.ndarray
    bar: np.ndarray
    mentions: np.ndarray


def window_texts(
    data: PortfolioData, texts: pl.DataFrame, embeddings: pl.DataFrame, row: int, lookback: int
) -> WindowTexts:
    """The texts of the window of decision row `row` (timeline position) with `lookback` bars, from the texts
    [id, published_at, symbols, text_hash] and their `embeddings` the run's news bins were built from."""
    mentions, vectors = text_mentions(texts, embeddings, data.ts, data.symbols)
    first = row - lookback + 1
    ours = mentions.filter((pl.col("bar") >= first) & (pl.col("bar") <= row))
    per_text = ours.unique("text").sort("text").with_row_index("position")  # one row per text
    hits = np.zeros((per_text.height, len(data.symbols)), dtype=np.float32)
    placed = ours.join(per_text.select("text", "position"), on="text")
    hits[placed["position"].to_numpy(), placed["asset"].to_numpy()] = 1.0
    return WindowTexts(
        rows=per_text.select("id", "published_at"),
        vectors=vectors[per_text["row"].to_numpy()].astype(np.float32),
        bar=per_text["bar"].to_numpy().astype(np.int64) - first,
        mentions=hits,
    )


def binned_news(vectors: Tensor, present: Tensor, bar: Tensor, mentions: Tensor, lookback: int) -> dict[str, Tensor]:
    """`news_emb` [B, A, L, D], `news_mask` [B, A, L], `news_coverage` [B, A, L, A] of the texts `vectors`
    [B, T, D] that are `present` [B, T] (bool), at window bars `bar` [B, T] (int64), mentioning `mentions` [B, T, A]
    (see the module docstring)."""
    at_bar = torch.nn.functional.one_hot(bar, lookback).to(vectors.dtype)  # [B, T, L]
    member = mentions.to(vectors.dtype)[..., None] * at_bar[:, :, None, :] * present.to(vectors.dtype)[:, :, None, None]
    count = member.sum(dim=1)  # [B, A, L]
    summed = torch.einsum("btal,btd->bald", member, vectors)
    has = count > 0
    coverage = torch.einsum("btal,btc->balc", member, mentions.to(vectors.dtype)) > 0
    return {
        NEWS_EMB: torch.where(has[..., None], summed / count.clamp_min(1.0)[..., None], 0.0),
        NEWS_MASK: has,
        NEWS_COVERAGE: coverage.to(vectors.dtype),
    }
