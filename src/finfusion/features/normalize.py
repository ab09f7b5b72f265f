"""Feature normalisers fitted on a training span only, stored with that span, and reused unchanged for inference.

Per symbol, each feature column gets a centre and a scale from the rows with fit_start <= ts < fit_end:
"zscore" uses the mean and standard deviation, "robust" the median and the inter-quartile range. Statistics pooled
over all symbols in the span serve symbols (or columns) that had no values there. A scale of 0 counts as 1. Nothing
after fit_end can reach the statistics, so a model validated after the span never sees its own future through them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from finfusion.data.atomic import write_json_atomic
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError

METHODS = ("zscore", "robust")
NORMALIZER_FILE = "_normalizer.json"
KEY_COLUMNS = ("symbol", "ts")
Pair = tuple[float | None, float | None]


@dataclass(frozen=True)
class FittedNormalizer:
    """Per-symbol (centre, scale) of each column, fitted on [fit_start, fit_end) (UTC instants)."""

    method: str
    columns: tuple[str, ...]
    fit_start: datetime
    fit_end: datetime
    #: symbol -> column -> (centre, scale); (None, None) when the symbol had no value of the column in the span.
    stats: dict[str, dict[str, Pair]]
    #: column -> (centre, scale) over every symbol's rows in the span.
    pooled: dict[str, Pair]

    @classmethod
    def fit(
        cls,
        features: pl.DataFrame,
        method: str,
        fit_start: datetime | date | str,
        fit_end: datetime | date | str,
        columns: list[str] | None = None,
    ) -> FittedNormalizer:
        """Fit on the rows of `features` [N rows: symbol, ts, feature columns] with fit_start <= ts < fit_end.

        `columns` defaults to every column but symbol and ts. Raises FinfusionError on an unknown method, an empty
        span or no rows in it.
        """
        if method not in METHODS:
            raise FinfusionError(f"unknown normaliser '{method}': use {' or '.join(METHODS)}")
        start, end = utc_instant(fit_start), utc_instant(fit_end)
        if start >= end:
            raise FinfusionError(f"normaliser span is empty: fit start {start} is not before fit end {end}")
        names = tuple(columns or [c for c in features.columns if c not in KEY_COLUMNS])
        span = features.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        if span.height == 0:
            raise FinfusionError(f"no feature rows in the normaliser span [{start}, {end})")
        per_symbol = span.group_by("symbol").agg(_aggregates(method, names)).sort("symbol")
        stats = {
            row["symbol"]: {c: _pair(row[f"{c}__centre"], row[f"{c}__scale"]) for c in names}
            for row in per_symbol.iter_rows(named=True)
        }
        pooled_row = span.select(_aggregates(method, names)).row(0, named=True)
        pooled = {c: _pair(pooled_row[f"{c}__centre"], pooled_row[f"{c}__scale"]) for c in names}
        return cls(method, names, start, end, stats, pooled)

    def transform(self, features: pl.DataFrame) -> pl.DataFrame:
        """`features` with every fitted column replaced by (value - centre) / scale of its symbol (the pooled ones for
        a symbol without its own); other columns and the row order stay as they are."""
        missing = [c for c in self.columns if c not in features.columns]
        if missing:
            raise FinfusionError(f"features lack the normalised column(s) {', '.join(missing)}")
        table = pl.DataFrame(
            {
                "symbol": list(self.stats),
                **{
                    f"{c}__{part}": [self.stats[s][c][i] for s in self.stats]
                    for c in self.columns
                    for i, part in enumerate(("centre", "scale"))
                },
            },
            schema={
                "symbol": pl.String,
                **{f"{c}__{p}": pl.Float64 for c in self.columns for p in ("centre", "scale")},
            },
        )
        joined = features.join(table, on="symbol", how="left", maintain_order="left")
        scaled = [
            (
                (pl.col(c) - pl.col(f"{c}__centre").fill_null(pl.lit(self.pooled[c][0], dtype=pl.Float64)))
                / pl.col(f"{c}__scale").fill_null(pl.lit(self.pooled[c][1], dtype=pl.Float64))
            ).alias(c)
            for c in self.columns
        ]
        return joined.with_columns(scaled).select(features.columns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "columns": list(self.columns),
            "fit_start": self.fit_start.isoformat(),
            "fit_end": self.fit_end.isoformat(),
            "stats": {s: {c: list(pair) for c, pair in cols.items()} for s, cols in self.stats.items()},
            "pooled": {c: list(pair) for c, pair in self.pooled.items()},
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> FittedNormalizer:
        try:
            return cls(
                method=payload["method"],
                columns=tuple(payload["columns"]),
                fit_start=utc_instant(payload["fit_start"]),
                fit_end=utc_instant(payload["fit_end"]),
                stats={s: {c: (v[0], v[1]) for c, v in cols.items()} for s, cols in payload["stats"].items()},
                pooled={c: (v[0], v[1]) for c, v in payload["pooled"].items()},
            )
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise FinfusionError(f"not a fitted normaliser: {exc!r}") from exc

    def save(self, lake: Lake, dataset: str, freq: str) -> Path:
        """Write atomically to LAKE/kind=features/dataset=NAME/freq=F/_normalizer.json; returns the path."""
        path = normalizer_path(lake, dataset, freq)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, lake: Lake, dataset: str, freq: str) -> FittedNormalizer:
        path = normalizer_path(lake, dataset, freq)
        if not path.exists():
            raise FinfusionError(f"no fitted normaliser at {path}: fit one first (features build --normalize)")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def normalizer_path(lake: Lake, dataset: str, freq: str) -> Path:
    return lake.dataset_dir("features", dataset, freq) / NORMALIZER_FILE


def utc_instant(value: datetime | date | str) -> datetime:
    """A UTC datetime from an ISO string, a date (its midnight UTC) or a datetime (naive ones are taken as UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise FinfusionError(f"not an ISO date or time: '{value}'") from exc
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _aggregates(method: str, columns: tuple[str, ...]) -> list[pl.Expr]:
    out = []
    for c in columns:
        x = pl.col(c).fill_nan(None)
        if method == "zscore":
            out += [x.mean().alias(f"{c}__centre"), x.std().alias(f"{c}__scale")]
        else:
            iqr = x.quantile(0.75, "linear") - x.quantile(0.25, "linear")
            out += [x.median().alias(f"{c}__centre"), iqr.alias(f"{c}__scale")]
    return out


def _pair(centre: float | None, scale: float | None) -> Pair:
    """(centre, scale) with a missing or zero scale counting as 1; (None, None) without a centre."""
    if centre is None or not math.isfinite(centre):
        return None, None
    return centre, scale if scale is not None and math.isfinite(scale) and scale > 0 else 1.0


def normalised_columns(features: pl.DataFrame, calendar: set[str]) -> list[str]:
    """The feature columns a normaliser scales: all but the key columns and the (already bounded) calendar terms."""
    return [c for c in features.columns if c not in KEY_COLUMNS and c not in calendar]


def features_metadata(source: str, features: pl.DataFrame, normalizer: FittedNormalizer | None) -> dict[str, object]:
    """The `_dataset.json` metadata of a features dataset: its source, columns and normaliser (if any)."""
    described = None
    if normalizer is not None:
        described = {
            "method": normalizer.method,
            "fit_start": normalizer.fit_start.isoformat(),
            "fit_end": normalizer.fit_end.isoformat(),
            "columns": list(normalizer.columns),
        }
    columns = [c for c in features.columns if c not in KEY_COLUMNS]
    return {"source": source, "features": columns, "normalizer": described}
