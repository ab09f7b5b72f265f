"""Relevance predictions: the dual-tower model's scores and direction probabilities per stock, decision instant and
horizon, as rows of the lake's `relevance` table (data/schema.py RELEVANCE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch

from finfusion.data.calendar import from_us
from finfusion.data.schema import RELEVANCE
from finfusion.samples.contract import FORWARD_RETURN, LABEL_MASK, ORIGIN_US, SYMBOL_INDEX
from finfusion.samples.contract import RELEVANCE as LABEL
from finfusion.samples.windows import collate

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import Dataset


@dataclass(frozen=True)
class ModelOutputs:
    """Arrays over N samples: `score` [N, K], `prob_up` [N, K]."""

    score: np.ndarray
    prob_up: np.ndarray


def model_outputs(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> ModelOutputs:
    """The model's scores and up probabilities over `dataset`, in its order (eval mode, no gradients)."""
    from torch.utils.data import DataLoader

    model.eval()
    scores, probs = [], []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
            outputs = model(batch)
            scores.append(outputs["score"].float().numpy())
            probs.append(outputs["direction_logits"].float().softmax(dim=-1)[..., 1].numpy())
    if not scores:
        return ModelOutputs(np.zeros((0, len(model.horizons))), np.zeros((0, len(model.horizons))))
    return ModelOutputs(np.concatenate(scores), np.concatenate(probs))


def relevance_rows(
    model: nn.Module, dataset: Any, symbols: Sequence[str], horizons: Sequence[int], batch_size: int = 512
) -> pl.DataFrame:
    """RELEVANCE rows of `model` over `dataset` (relevance samples: samples/tensors.py TensorSamples)."""
    outputs = model_outputs(model, dataset, batch_size)
    n, k = outputs.score.shape
    known = dataset.column(LABEL_MASK)
    label = np.where(known, dataset.column(LABEL), np.nan)
    forward = np.where(known, dataset.column(FORWARD_RETURN), np.nan)
    rows = pl.DataFrame(
        {
            "symbol": np.repeat(np.asarray(symbols, dtype=object)[dataset.column(SYMBOL_INDEX)], k).tolist(),
            "origin_ts": from_us(np.repeat(dataset.column(ORIGIN_US), k), "origin_ts"),
            "horizon_days": np.tile(np.asarray(horizons, dtype=np.int64), n),
            "score": outputs.score.reshape(-1).astype(np.float64),
            "prob_up": outputs.prob_up.reshape(-1).astype(np.float64),
            "prob_down": 1.0 - outputs.prob_up.reshape(-1).astype(np.float64),
            "label": label.reshape(-1).astype(np.float64),
            "forward_return": forward.reshape(-1).astype(np.float64),
        }
    ).with_columns(pl.col("label", "forward_return").fill_nan(None))
    return RELEVANCE.conform(rows)
