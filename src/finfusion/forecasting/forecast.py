"""Run a fitted model over windows and lay its forecasts out: arrays, the lake's forecasts table, report frames.

Shapes: N windows, H horizon, T targets, Q quantile levels, S sampled paths, L lookback. Every array is in the
target's own units: forecasts and realised values are denormalised with each window's `scale_loc` / `scale_scale`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from finfusion.data.calendar import from_us
from finfusion.evaluation.metrics import sample_quantiles
from finfusion.evaluation.run_layout import quantile_column
from finfusion.models.base import Capabilities
from finfusion.samples.contract import FUTURE, FUTURE_MASK, LABEL, PAST, SCALE_LOC, SCALE_SCALE
from finfusion.samples.text_windows import TextWindowDataset
from finfusion.samples.windows import WindowDataset, collate

#: Batch keys a model never sees when it forecasts.
HIDDEN_AT_PREDICTION = frozenset({FUTURE, FUTURE_MASK, LABEL})
#: The per-window array fields of `Forecasts` (first axis N).
PER_WINDOW = ("symbol_index", "origin_us", "target_us", "point", "realised", "past", "quantiles", "samples")
#: Quantile levels written from sampled paths (the report's nested intervals need symmetric pairs).
SAMPLE_LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


@dataclass
class Forecasts:
    """A model's forecasts over N windows (NaN where a value does not exist)."""

    symbols: tuple[str, ...]
    targets: tuple[str, ...]
    symbol_index: np.ndarray  # [N]
    origin_us: np.ndarray  # [N]
    target_us: np.ndarray  # [N, H] instant of each future step (-1 where the bar does not exist)
    point: np.ndarray  # [N, H, T]
    realised: np.ndarray  # [N, H, T]
    past: np.ndarray  # [N, L, T] the targets' own history in the window (for MASE scales)
    levels: tuple[float, ...] = ()
    quantiles: np.ndarray | None = None  # [N, H, T, Q]
    samples: np.ndarray | None = None  # [N, S, H, T]

    def __len__(self) -> int:
        return len(self.origin_us)

    def select(self, rows: np.ndarray) -> Forecasts:
        """The windows picked by `rows` (a bool mask [N] or positions)."""
        picked = {key: getattr(self, key)[rows] for key in PER_WINDOW if getattr(self, key) is not None}
        return dataclasses.replace(self, **picked)

    def at_steps(self, steps: np.ndarray) -> Forecasts:
        """The (window, step) pairs picked by `steps` [N, H] bool as K one-step windows, in window order: each keeps
        its window's symbol, decision instant and history, so every metric and test of whole windows applies."""
        rows, cols = np.nonzero(steps)
        return dataclasses.replace(
            self,
            symbol_index=self.symbol_index[rows],
            origin_us=self.origin_us[rows],
            target_us=self.target_us[rows, cols][:, None],
            point=self.point[rows, cols][:, None],
            realised=self.realised[rows, cols][:, None],
            past=self.past[rows],
            quantiles=None if self.quantiles is None else self.quantiles[rows, cols][:, None],
            samples=None if self.samples is None else self.samples[rows, :, cols][:, :, None],
        )


def predict_batch(model: Capabilities, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The model's outputs for one batch without what happened after the decision (`future`, `future_mask`,
    `label`): `forward` in eval mode for neural models, `predict` otherwise."""
    batch = {key: value for key, value in batch.items() if key not in HIDDEN_AT_PREDICTION}
    if isinstance(model, nn.Module):
        model.eval()
        with torch.inference_mode():
            return model(batch)
    return model.predict(batch)


def _denormalise(values: Tensor, loc: Tensor, scale: Tensor) -> np.ndarray:
    """values [B, ..., T] with loc, scale [B, 1, T] broadcast over the middle axes -> float64 array."""
    shape = (values.shape[0],) + (1,) * (values.dim() - 2) + (values.shape[-1],)
    return (values.double() * scale.double().reshape(shape) + loc.double().reshape(shape)).numpy()


def predicted_batches(
    model: Capabilities, dataset: Sequence[dict[str, Tensor]], batch_size: int = 256
) -> Iterator[tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """(batch, the model's outputs) for consecutive batches of `dataset`'s samples, in order (`predict_batch`)."""
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        yield batch, predict_batch(model, batch)


def run_forecasts(model: Capabilities, dataset: WindowDataset | TextWindowDataset, batch_size: int = 256) -> Forecasts:
    """Forecast every window of `dataset` with `model` (in window order)."""
    parts: dict[str, list[np.ndarray]] = {}
    levels: tuple[float, ...] = ()
    target_cols = dataset.panel.column_index(dataset.config.targets)
    input_cols = list(dataset.config.inputs)
    past_target = [input_cols.index(t) for t in dataset.config.targets if t in input_cols]
    for batch, outputs in predicted_batches(model, dataset, batch_size):
        loc, scale = batch[SCALE_LOC], batch[SCALE_SCALE]
        future = _denormalise(batch[FUTURE], loc, scale)
        future[~batch[FUTURE_MASK].numpy()] = np.nan
        parts.setdefault("realised", []).append(future)
        parts.setdefault("point", []).append(_denormalise(outputs["point"].float(), loc, scale))
        if len(past_target) == len(target_cols):
            parts.setdefault("past", []).append(_denormalise(batch[PAST][..., past_target], loc, scale))
        if "quantiles" in outputs:
            levels = tuple(float(v) for v in model.quantile_levels)
            quantiles = outputs["quantiles"].float().movedim(-1, 1)  # [B, Q, H, T]
            parts.setdefault("quantiles", []).append(np.moveaxis(_denormalise(quantiles, loc, scale), 1, -1))
        if "samples" in outputs:
            parts.setdefault("samples", []).append(_denormalise(outputs["samples"].float(), loc, scale))
    joined = {key: np.concatenate(value) for key, value in parts.items()}
    index = dataset.index
    horizon = dataset.config.horizon
    target_us = np.full((len(index), horizon), -1, dtype=np.int64)
    for row, (s, i) in enumerate(index):
        ts = dataset.panel.ts[s][i + 1 : i + 1 + horizon]
        target_us[row, : len(ts)] = ts
    empty = np.zeros((len(index), dataset.config.lookback, len(target_cols)))
    return Forecasts(
        symbols=dataset.panel.symbols,
        targets=tuple(dataset.config.targets),
        symbol_index=index[:, 0].copy(),
        origin_us=dataset.origins_us,
        target_us=target_us,
        point=joined.get("point", np.zeros((0, horizon, len(target_cols)))),
        realised=joined.get("realised", np.zeros((0, horizon, len(target_cols)))),
        past=joined.get("past", empty),
        levels=levels,
        quantiles=joined.get("quantiles"),
        samples=joined.get("samples"),
    )


def quantile_view(forecasts: Forecasts) -> tuple[tuple[float, ...], np.ndarray | None]:
    """(levels, quantiles [N, H, T, Q]): the model's own quantiles, else empirical ones of its samples, else none."""
    if forecasts.quantiles is not None:
        return forecasts.levels, forecasts.quantiles
    if forecasts.samples is not None:
        return SAMPLE_LEVELS, np.moveaxis(sample_quantiles(forecasts.samples, SAMPLE_LEVELS, axis=1), 0, -1)
    return (), None


def lake_frame(forecasts: Forecasts) -> pl.DataFrame:
    """Long rows for the lake's forecasts table: symbol, origin_ts, step, target, point, realised, q<level>..."""
    n, horizon, n_targets = forecasts.point.shape
    rows = np.arange(n).repeat(horizon * n_targets)
    steps = np.tile(np.arange(horizon).repeat(n_targets), n)
    targets = np.tile(np.arange(n_targets), n * horizon)
    columns: dict[str, object] = {
        "symbol": np.asarray(forecasts.symbols, dtype=object)[forecasts.symbol_index[rows]],
        "origin_ts": from_us(forecasts.origin_us[rows], "origin_ts"),
        "step": steps + 1,
        "target": np.asarray(forecasts.targets, dtype=object)[targets],
        "point": forecasts.point.reshape(-1),
        "realised": forecasts.realised.reshape(-1),
    }
    levels, quantiles = quantile_view(forecasts)
    for q, level in enumerate(levels):
        columns[quantile_column(level)] = quantiles[..., q].reshape(-1)
    return pl.DataFrame(columns).with_columns(pl.col("point", "realised").fill_nan(None))


def report_frame(forecasts: Forecasts, model: str, target: int = 0) -> pl.DataFrame | None:
    """Rows of RUN/forecasts.parquet (docs/report.md) for target channel `target`; None without quantiles.

    The target is a return, so `actual > 0` means up; `p_up` is the share of sampled paths above 0 when there are
    samples."""
    levels, quantiles = quantile_view(forecasts)
    if quantiles is None:
        return None
    n, horizon = forecasts.target_us.shape
    keep = (forecasts.target_us >= 0).reshape(-1)
    rows = np.arange(n).repeat(horizon)
    columns: dict[str, object] = {
        "model": np.full(n * horizon, model, dtype=object),
        "symbol": np.asarray(forecasts.symbols, dtype=object)[forecasts.symbol_index[rows]],
        "ts": from_us(forecasts.origin_us[rows], "ts"),
        "h": np.tile(np.arange(1, horizon + 1), n),
        "target_ts": from_us(np.where(forecasts.target_us >= 0, forecasts.target_us, 0).reshape(-1), "target_ts"),
        "actual": forecasts.realised[..., target].reshape(-1),
        "mean": forecasts.point[..., target].reshape(-1),
    }
    for q, level in enumerate(levels):
        columns[quantile_column(level)] = quantiles[..., target, q].reshape(-1)
    if forecasts.samples is not None:
        columns["p_up"] = (forecasts.samples[..., target] > 0).mean(axis=1).reshape(-1)
    frame = pl.DataFrame(columns).filter(pl.Series(keep))
    return frame.with_columns(pl.col("actual").fill_nan(None))
