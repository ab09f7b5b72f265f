"""Window samples with the texts known at their decision bar: `text_emb` [N, D] and `text_mask` [N], and, when the
aligned texts carry token ids, `text_ids` [N, S] and `text_ids_mask` [N, S] of the same texts in the same slots.

The texts of a window are those `align_texts_to_bars` assigned to its decision bar (the last bar of `past`): texts
published strictly before that bar's close, the most recent N of its text window, oldest first. Nothing published
after the decision bar can appear. A decision bar absent from the alignment gets no texts (text_mask all False).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from finfusion.features.align import AlignedText
from finfusion.features.normalize import FittedNormalizer
from finfusion.samples.contract import TEXT_EMB, TEXT_IDS, TEXT_IDS_MASK, TEXT_MASK
from finfusion.samples.windows import Instant, Panel, WindowConfig, WindowDataset


def aligned_rows(panel: Panel, aligned: AlignedText) -> list[np.ndarray]:
    """Per symbol of `panel`, the row [n_s] of `aligned` for each of its bars (-1 where the bar is not aligned)."""
    utc_us = pl.Datetime("us", "UTC")
    keys = aligned.ids.select("symbol", pl.col("ts").cast(utc_us)).with_row_index("row")
    bars = panel.frame.select("symbol", pl.col("ts").cast(utc_us))
    joined = bars.join(keys, on=["symbol", "ts"], how="left", maintain_order="left")
    rows = joined["row"].cast(pl.Int64).fill_null(-1).to_numpy()
    bounds = np.cumsum([0, *(len(ts) for ts in panel.ts)])
    return [rows[bounds[k] : bounds[k + 1]] for k in range(len(panel.symbols))]


class TextWindowDataset(Dataset[dict[str, torch.Tensor]]):
    """`windows`' samples plus `text_emb` [N, D] float32 and `text_mask` [N] bool from `aligned` (N = max_texts)."""

    def __init__(self, windows: WindowDataset, aligned: AlignedText, rows: list[np.ndarray] | None = None) -> None:
        self.windows = windows
        self.aligned = aligned
        self.rows = aligned_rows(windows.panel, aligned) if rows is None else rows

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def panel(self) -> Panel:
        return self.windows.panel

    @property
    def config(self) -> WindowConfig:
        return self.windows.config

    @property
    def normalizer(self) -> FittedNormalizer | None:
        return self.windows.normalizer

    @property
    def index(self) -> np.ndarray:
        """(symbol, decision-bar position) [M, 2] of the windows."""
        return self.windows.index

    @property
    def origins_us(self) -> np.ndarray:
        return self.windows.origins_us

    @property
    def future_end_us(self) -> np.ndarray:
        return self.windows.future_end_us

    def text_ids(self, item: int) -> list[str]:
        """Ids of the texts window `item` sees, oldest first (those behind its `text_mask`)."""
        s, i = (int(v) for v in self.windows.index[item])
        row = int(self.rows[s][i])
        return [] if row < 0 else list(self.aligned.ids["ids"][row])[-self.aligned.index.shape[1] :]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        sample = self.windows[item]
        s, i = (int(v) for v in self.windows.index[item])
        row = int(self.rows[s][i])
        slots, dim = self.aligned.index.shape[1], self.aligned.vectors.shape[1]
        if row < 0:
            emb, mask = np.zeros((slots, dim), dtype=np.float32), np.zeros(slots, dtype=bool)
        else:
            emb, mask = self.aligned.padded(np.array([row]))[0], self.aligned.mask[row].copy()
        texts = {TEXT_EMB: torch.from_numpy(np.ascontiguousarray(emb)), TEXT_MASK: torch.from_numpy(mask)}
        if self.aligned.tokens is not None:
            ids, id_mask = self.aligned.tokens.gather(self.text_ids(item), mask)
            texts |= {TEXT_IDS: torch.from_numpy(ids), TEXT_IDS_MASK: torch.from_numpy(id_mask)}
        return {**sample, **texts}

    def subset(self, keep: np.ndarray) -> TextWindowDataset:
        return TextWindowDataset(self.windows.subset(keep), self.aligned, self.rows)

    def split(self, start: Instant | None = None, end: Instant | None = None) -> TextWindowDataset:
        return TextWindowDataset(self.windows.split(start, end), self.aligned, self.rows)
