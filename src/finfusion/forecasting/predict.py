"""Forecast spans of a trained run's windows (the forecast family's predictions, families/forecast.py).

Spans: `test`, `val`, `train` (the run's own split), `all` (every window with a complete future) and `latest` (one
window per symbol ending at its last bar: a live forecast, with no realised values yet). Forecasts go to the lake's
forecasts table (dataset = the run folder's name) and, when asked, to a file:

- `.parquet`: the lake rows (symbol, origin_ts, step, target, point, realised, q<level>...);
- `.npz` (compressed): `predictions` [N, S, H, T] (sampled paths; the point forecast as S = 1 for point models),
  `point` [N, H, T], `targets` [N, H, T] (realised, NaN where unknown), `quantiles` [N, H, T, Q] and
  `quantile_levels` [Q] when the model has them, `symbols` [N], `origin_us` [N] and `texts` [N] (the texts known at
  each decision, joined; empty when the data part has none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from finfusion.data.atomic import atomic_path
from finfusion.data.lake import Lake, WriteResult, check_name
from finfusion.data.schema import FORECASTS
from finfusion.errors import FinfusionError
from finfusion.forecasting.data import ExperimentData, Windows, instant_us
from finfusion.forecasting.forecast import Forecasts, lake_frame, quantile_view
from finfusion.forecasting.texts import with_texts
from finfusion.samples.text_windows import TextWindowDataset
from finfusion.samples.windows import WindowDataset

Span = Literal["test", "val", "train", "all", "latest"]
SPANS: tuple[str, ...] = ("test", "val", "train", "all", "latest")


def latest_windows(data: ExperimentData) -> Windows:
    """One window per symbol whose decision bar is the symbol's last bar (future unknown), same normaliser."""
    config = dataclasses.replace(data.config, require_future=False)
    index = np.array([[s, len(ts) - 1] for s, ts in enumerate(data.panel.ts) if len(ts) >= config.lookback])
    if index.size == 0:
        raise FinfusionError(f"no symbol has the {config.lookback} bars a window needs")
    return with_texts(WindowDataset(data.panel, config, data.train.normalizer, index.astype(np.int64)), data.aligned)


def windows_between(data: ExperimentData, start: datetime | None, end: datetime) -> Windows:
    """One window per (symbol, bar) with start < bar instant <= end and a full lookback, its future known or not
    (the serve jobs' decisions), with the stored normaliser; may be empty."""
    config = dataclasses.replace(data.config, require_future=False)
    start_us = np.iinfo(np.int64).min if start is None else instant_us(start)
    end_us = instant_us(end)
    rows = []
    for s, ts in enumerate(data.panel.ts):
        keep = np.flatnonzero((ts <= end_us) & (ts > start_us))
        rows += [[s, int(i)] for i in keep if i >= config.lookback - 1]
    index = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    return with_texts(WindowDataset(data.panel, config, data.train.normalizer, index), data.aligned)


def span_windows(data: ExperimentData, span: str) -> Windows:
    if span == "latest":
        return latest_windows(data)
    if span == "all":
        return with_texts(WindowDataset(data.panel, data.config, data.train.normalizer), data.aligned)
    if span not in SPANS:
        raise FinfusionError(f"unknown span '{span}'; choose one of {', '.join(SPANS)}")
    return getattr(data, span)


def write_forecasts_to_lake(forecasts: Forecasts, name: str, run_dir: Path, lake: Lake) -> WriteResult:
    """Merge the forecasts into the lake's forecasts table as dataset `name` (the run's name)."""
    name = check_name(name, "run name")
    return lake.write(FORECASTS, name, lake_frame(forecasts), metadata={"run": str(run_dir.resolve())})


def export(forecasts: Forecasts, path: Path, texts: list[str] | None = None) -> Path:
    """Write the forecasts to `.npz` or `.parquet` (see the module docstring) atomically."""
    if path.suffix == ".parquet":
        with atomic_path(path) as tmp:
            lake_frame(forecasts).write_parquet(tmp)
        return path
    if path.suffix != ".npz":
        raise FinfusionError(f"{path}: export to .npz or .parquet")
    paths = forecasts.samples if forecasts.samples is not None else forecasts.point[:, None]
    arrays: dict[str, np.ndarray] = {
        "predictions": paths.astype(np.float32),
        "point": forecasts.point.astype(np.float32),
        "targets": forecasts.realised.astype(np.float32),
        "symbols": np.asarray([forecasts.symbols[i] for i in forecasts.symbol_index], dtype=np.str_),
        "origin_us": forecasts.origin_us,
        "texts": np.asarray(texts if texts is not None else [""] * len(forecasts), dtype=np.str_),
    }
    levels, quantiles = quantile_view(forecasts)
    if quantiles is not None:
        arrays.update(quantiles=quantiles.astype(np.float32), quantile_levels=np.asarray(levels))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def window_texts(windows: Windows, lake: Lake, options: Mapping[str, Any]) -> list[str] | None:
    """Per window, the titles (else bodies) of the texts it saw, oldest first, joined by " | "; None without texts."""
    if not isinstance(windows, TextWindowDataset):
        return None
    dataset = str(options["texts"]["dataset"] or options["dataset"])
    texts = lake.read("text", dataset).select("id", pl.coalesce("title", "body").fill_null("").alias("text"))
    by_id = dict(zip(texts["id"].to_list(), texts["text"].to_list(), strict=True))
    return [" | ".join(by_id.get(i, "") for i in windows.text_ids(k)) for k in range(len(windows))]


def forecast_summary(forecasts: Forecasts) -> pl.DataFrame:
    """Per symbol: windows, first and last decision instant (for the command's printout)."""
    frame = lake_frame(forecasts).filter(pl.col("step") == 1)
    return frame.group_by("symbol").agg(
        pl.len().alias("windows"), pl.col("origin_ts").min().alias("first"), pl.col("origin_ts").max().alias("last")
    )
