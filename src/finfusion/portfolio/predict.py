"""Portfolio weights of a trained model for every decision bar of a span, written to the lake's WEIGHTS table.

A decision at bar t uses only bars and texts known at its close (the sample builder's point-in-time rule) and the
normaliser saved with the model. Weights are the top-k long/short weights of the model's logits (`task.k` of the
run's config): one row per (ts, symbol) of the universe, zeros included, so each ts holds the whole portfolio.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from finfusion.data.calendar import from_us
from finfusion.data.lake import Lake
from finfusion.data.schema import WEIGHTS
from finfusion.errors import FinfusionError
from finfusion.portfolio.artifacts import PortfolioModel, load_run
from finfusion.portfolio.inputs import build_data, load_inputs, loader, window_config
from finfusion.samples.portfolio import PortfolioDataset
from finfusion.samples.windows import Instant
from finfusion.training.portfolio_loss import top_k_abs_weights


def model_weights(trained: PortfolioModel, dataset: PortfolioDataset, batch_size: int = 64) -> np.ndarray:
    """Top-k weights [M, A] of `trained`'s logits for every window of `dataset`, in its order (k = `task.k`)."""
    return model_weights_of(trained.model, dataset, int(trained.cfg.task.k), batch_size)


def model_weights_of(model: torch.nn.Module, dataset: PortfolioDataset, k: int, batch_size: int = 64) -> np.ndarray:
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


def predict_weights(
    lake: Lake,
    run: str | PortfolioModel,
    *,
    start: Instant | None = None,
    end: Instant | None = None,
    every: int = 1,
    weights_dataset: str = "cga",
    model_version: str = "latest",
) -> pl.DataFrame:
    """Weights of the model (a run folder or a loaded model) at every `every`-th decision bar with start <= ts < end,
    from the data its config names; written to WEIGHTS dataset `weights_dataset` and returned (ts, symbol, weight,
    model_version)."""
    trained = run if isinstance(run, PortfolioModel) else load_run(run)
    config = window_config(trained.cfg.data, require_future=False, stride=every)
    inputs = load_inputs(lake, trained.cfg.data, news=bool(trained.cfg.model.use_news))
    data = build_data(inputs, config, normalizer=trained.normalizer, symbols=trained.symbols)
    dataset = PortfolioDataset(data, config).split(start, end, purge=False)
    if len(dataset) == 0:
        raise FinfusionError(f"no decision bar with a full lookback between {start} and {end}")
    frame = weights_frame(dataset.origins_us, trained.symbols, model_weights(trained, dataset), model_version)
    lake.write(
        WEIGHTS, weights_dataset, frame, metadata={"source": "finfusion portfolio", "k": int(trained.cfg.task.k)}
    )
    return frame
