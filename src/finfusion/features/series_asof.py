"""Point-in-time features of exogenous series (the lake's `series` table) at decision instants.

For a series and an instant t, only rows published at or before t count, and of each period only its latest vintage
known at t (what `data.series.as_of` returns). Three features per series:

- `{series}_level`:  the value of the latest period known at t;
- `{series}_change`: that value minus the previous period's value (both as known at t);
- `{series}_age`:    days from the latest period's first release to t.

An instant before the series' first release (or before its second period, for the change) gets NaN. Vectorised per
series over the sorted release instants: rows are replayed once in release order and each instant reads the state
after the last release at or before it, so the cost is O(rows x periods + instants) rather than one as-of query per
instant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from finfusion.data.calendar import to_us
from finfusion.errors import FinfusionError

US_PER_DAY = 86_400_000_000
SUFFIXES = ("level", "change", "age")


def series_feature_names(series: Sequence[str]) -> list[str]:
    return [f"{name}_{suffix}" for name in series for suffix in SUFFIXES]


def series_features(rows: pl.DataFrame, series: Sequence[str], instants_us: np.ndarray) -> dict[str, np.ndarray]:
    """Features [N] per name of `series_feature_names(series)` at `instants_us` [N] (int64 UTC µs)."""
    out: dict[str, np.ndarray] = {}
    for name in series:
        chosen = rows.filter(pl.col("series") == name).sort("published_at", "period")
        if chosen.height == 0:
            raise FinfusionError(f"series '{name}' has no rows in the lake")
        states = _replay(to_us(chosen["period"]), to_us(chosen["published_at"]), chosen["value"].to_numpy())
        published = to_us(chosen["published_at"])
        step = np.searchsorted(published, instants_us, side="right") - 1  # the last row known at each instant
        known = step >= 0
        at = np.maximum(step, 0)
        for suffix, values in zip(SUFFIXES, states, strict=True):
            feature = np.where(known, values[at], np.nan)
            if suffix == "age":
                feature = np.where(known, (instants_us - values[at]) / US_PER_DAY, np.nan)
            out[f"{name}_{suffix}"] = feature
    return out


def _replay(period: np.ndarray, published: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, ...]:
    """After each row (in release order): the latest period's value, its change from the previous period and the
    first release instant of the latest period, as known then."""
    latest_vintage: dict[int, float] = {}
    first_release: dict[int, int] = {}
    level, change, first = (np.full(len(value), np.nan) for _ in range(3))
    for i, (p, t, v) in enumerate(zip(period.tolist(), published.tolist(), value.tolist(), strict=True)):
        latest_vintage[p] = v
        first_release.setdefault(p, t)
        periods = sorted(latest_vintage)
        newest = periods[-1]
        level[i] = latest_vintage[newest]
        change[i] = latest_vintage[newest] - latest_vintage[periods[-2]] if len(periods) > 1 else np.nan
        first[i] = first_release[newest]
    return level, change, first
