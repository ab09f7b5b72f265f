"""The continuous inputs of a token window (seed 001, fusion): the price window of the same bars and the texts known
at its decision bar, added to the token-classification family's windows (samples/token_labels.py) when the data
part asks for them (`data.prices` and `data.texts`, defaults in samples/token_labels.py).

A token window decided at bar t of a symbol (the last of its W tokens) then also carries:

- `prices: {enabled: true}`: `past` [L, C] float32, the channels `prices.channels` (bar features of
  features/bars.py, each computed from the symbol's bars at or before its own) of the last L = `prices.lookback` bars
  up to and including bar t, oldest first, and `past_mask` [L] bool, False on the left padding where the symbol has
  fewer than L bars (padding is 0; a feature still in its warm-up, null, is 0 too);
- `texts: {enabled: true}`: `text_emb` [N, D] float32 and `text_mask` [N] bool, the N = `texts.max_texts` most
  recent texts published strictly before bar t's close within `texts.window` sessions (features/align.py, the
  alignment of the forecast family's windows), oldest first; zeros and False in the slots left empty.

Nothing of bar t+1 or later enters either (tests/test_token_fusion.py changes everything after t and compares).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from finfusion.data.calendar import from_us, to_us
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.features.align import AlignedText, align_texts_to_bars, bars_calendar
from finfusion.features.bars import FeatureConfig, build_features
from finfusion.features.text import embedded_texts
from finfusion.samples.contract import PAST, PAST_MASK, TEXT_EMB, TEXT_MASK
from finfusion.samples.tensors import TensorSamples


def price_windows(
    bars: pl.DataFrame, symbols: Sequence[str], symbol_index: np.ndarray, origin_us: np.ndarray,
    options: Mapping[str, Any],
) -> dict[str, torch.Tensor]:  # fmt: skip
    """`past` [M, L, C] and `past_mask` [M, L] of the M windows (`symbol_index`, `origin_us` [M]; module docstring)."""
    channels, lookback = [str(c) for c in options["channels"]], int(options["lookback"])
    known = FeatureConfig().names
    unknown = [c for c in channels if c not in known]
    if unknown or not channels or lookback < 1:
        raise FinfusionError(
            f"data.prices: need lookback >= 1 and channels among the bar features; unknown: {unknown or 'none'} "
            f"(known: {', '.join(known)})"
        )
    past = np.zeros((len(origin_us), lookback, len(channels)), dtype=np.float32)
    mask = np.zeros((len(origin_us), lookback), dtype=bool)
    features = build_features(bars.filter(pl.col("symbol").is_in(list(symbols))))
    for (symbol,), rows in features.group_by("symbol", maintain_order=True):
        picked = np.flatnonzero(symbol_index == list(symbols).index(str(symbol)))
        if picked.size == 0:
            continue
        ts = to_us(rows["ts"])
        values = np.nan_to_num(rows.select(channels).to_numpy().astype(np.float32))  # [n, C]
        decision = np.searchsorted(ts, origin_us[picked], side="right") - 1  # the decision bar t
        if (decision < 0).any() or (ts[decision] != origin_us[picked]).any():
            raise FinfusionError(f"{symbol}: a token window's decision bar is not among the symbol's bars")
        positions = decision[:, None] - lookback + 1 + np.arange(lookback)  # [m, L], bars t-L+1 .. t
        inside = positions >= 0
        past[picked] = np.where(inside[..., None], values[np.maximum(positions, 0)], 0.0)
        mask[picked] = inside
    return {PAST: torch.from_numpy(past), PAST_MASK: torch.from_numpy(mask)}


def window_texts(
    lake: Lake, options: Mapping[str, Any], bars_dataset: str, symbols: Sequence[str], symbol_index: np.ndarray,
    origin_us: np.ndarray,
) -> AlignedText:  # fmt: skip
    """The texts aligned to the decision bars of the M windows: one row per window, in their order."""
    dataset = str(options["dataset"] or bars_dataset)
    hashed, embeddings = embedded_texts(lake, dataset, options["encoder"], int(options["batch_size"]))
    names = np.asarray(list(symbols), dtype=object)
    keys = pl.DataFrame({"symbol": names[symbol_index].tolist(), "ts": from_us(origin_us, "ts")})
    return align_texts_to_bars(
        keys,
        hashed,
        embeddings,
        bars_calendar(lake, bars_dataset, keys["ts"]),
        window=int(options["window"]),
        max_texts=int(options["max_texts"]),
        universe=list(symbols),
        scope=str(options["scope"]),
    )


class TextSamples(Dataset[dict[str, torch.Tensor]]):
    """`windows`' samples plus `text_emb` [N, D] and `text_mask` [N] of row `rows[i]` of `aligned` for sample i
    (the embeddings are gathered per sample, not stored per window)."""

    def __init__(self, windows: TensorSamples, aligned: AlignedText, rows: np.ndarray) -> None:
        self.windows = windows
        self.aligned = aligned
        self.rows = rows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index : index + 1]
        texts = {
            TEXT_EMB: torch.from_numpy(self.aligned.padded(row)[0]),
            TEXT_MASK: torch.from_numpy(self.aligned.mask[row[0]].copy()),
        }
        return {**self.windows[index], **texts}

    def subset(self, mask: np.ndarray) -> TextSamples:
        return TextSamples(self.windows.subset(mask), self.aligned, self.rows[mask])

    def column(self, key: str) -> np.ndarray:
        return self.windows.column(key)
