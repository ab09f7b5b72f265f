"""Portfolio weights of a trained model for the windows of a dataset, as rows of the lake's WEIGHTS table (the
portfolio family's predictions, families/portfolio.py).

A decision at bar t uses only bars and texts known at its close (the sample builder's point-in-time rule) and the
normaliser saved with the model. Weights are the top-k long/short weights of the model's logits (`task.k` of the
run's config): one row per (ts, symbol) of the universe, zeros included, so each ts holds the whole portfolio.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from finfusion.data.calendar import from_us
from finfusion.data.schema import WEIGHTS
from finfusion.portfolio.inputs import loader
from finfusion.samples.portfolio import PortfolioDataset
from finfusion.training.portfolio_loss import top_k_abs_weights


def model_weights(model: torch.nn.Module, dataset: PortfolioDataset, k: int, batch_size: int = 64) -> np.ndarray:
    """Top-k weights [M, A] of `model`'s logits for every window of `dataset`, in its order."""
    model.eval()
    out = []
    with torch.inference_mode():
        for batch in loader(dataset, batch_size):
            out.append(top_k_abs_weights(model(batch)["logits"], k).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(dataset.symbols)))


def weights_frame(ts_us: np.ndarray, symbols: list[str], weights: np.ndarray, model_version: str) -> pl.DataFrame:
    """Long WEIGHTS rows [M * A: ts, symbol, weight, model_version] of weights [M, A] decided at `ts_us` [M]."""
    n, assets = weights.shape
    return pl.DataFrame(
        {
            "ts": from_us(np.repeat(ts_us, assets), "ts"),
            "symbol": np.tile(np.array(symbols, dtype=object), n).tolist(),
            "weight": weights.reshape(-1).astype(np.float64),
            "model_version": [model_version] * (n * assets),
        },
        schema={
            "ts": WEIGHTS.column("ts").dtype,
            "symbol": pl.String,
            "weight": pl.Float64,
            "model_version": pl.String,
        },
    )
