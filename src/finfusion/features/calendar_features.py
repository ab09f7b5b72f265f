"""Calendar features as Fourier terms of the bar's close instant in exchange local time: minute of day, day of week
(Monday = 0) and month (January = 0).

A cyclic quantity q of period P gives, for harmonics k = 1 .. K, the columns `{name}_sin_{k}` = sin(2 pi k q / P) and
`{name}_cos_{k}` = cos(2 pi k q / P), so the end of a cycle sits next to its start (23:59 beside 00:00, December
beside January). The instant alone decides them: they are known at the bar's close.
"""

from __future__ import annotations

import numpy as np

from finfusion.data.calendar import US_PER_MINUTE, from_us

US_PER_HOUR = 60 * US_PER_MINUTE
US_PER_DAY = 24 * US_PER_HOUR
MINUTES_PER_DAY = 1440
#: (name, period) of each cycle, in column order.
CYCLES = (("minute", MINUTES_PER_DAY), ("dow", 7), ("month", 12))


def calendar_feature_names(harmonics: int) -> list[str]:
    return [f"{name}_{fn}_{k}" for name, _ in CYCLES for k in range(1, harmonics + 1) for fn in ("sin", "cos")]


def calendar_features(ts_us: np.ndarray, tz: str, harmonics: int) -> dict[str, np.ndarray]:
    """Fourier terms [N] of close instants `ts_us` [N] (int64 µs since the epoch, UTC) in time zone `tz`."""
    if len(ts_us) == 0:
        return {name: np.empty(0) for name in calendar_feature_names(harmonics)}
    local = ts_us + utc_offsets_us(ts_us, tz)
    day = local // US_PER_DAY  # local calendar day, as days since 1970-01-01
    minute = local // US_PER_MINUTE - day * MINUTES_PER_DAY
    first_day = int(day.min())
    days = np.arange(first_day, int(day.max()) + 1)
    day_index = day - first_day
    per_day = {
        "dow": (days + 3) % 7,  # 1970-01-01 was a Thursday
        "month": days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12,
    }
    out: dict[str, np.ndarray] = {}
    for name, period in CYCLES:
        values, index = (np.arange(period), minute) if name == "minute" else (per_day[name], day_index)
        for k in range(1, harmonics + 1):
            angle = (2.0 * np.pi * k / period) * values
            out[f"{name}_sin_{k}"] = np.sin(angle)[index]
            out[f"{name}_cos_{k}"] = np.cos(angle)[index]
    return out


def utc_offsets_us(ts_us: np.ndarray, tz: str) -> np.ndarray:
    """[N] offset of local time in `tz` from UTC (µs) at each instant [N].

    Offsets are looked up per UTC hour; the few hours that contain a change of offset (daylight saving) are resolved
    instant by instant.
    """
    hour = ts_us // US_PER_HOUR
    first_hour = int(hour.min())
    edges = np.arange(first_hour, int(hour.max()) + 2, dtype=np.int64) * US_PER_HOUR
    at_edges = _offsets(edges, tz)
    hour_index = hour - first_hour
    out = at_edges[:-1][hour_index]
    changes = at_edges[1:] != at_edges[:-1]
    if changes.any():
        rows = np.flatnonzero(changes[hour_index])
        out[rows] = _offsets(ts_us[rows], tz)
    return out


def _offsets(instants_us: np.ndarray, tz: str) -> np.ndarray:
    local = from_us(instants_us, "t").dt.convert_time_zone(tz).dt.replace_time_zone(None)
    return local.dt.cast_time_unit("us").to_physical().to_numpy() - instants_us
