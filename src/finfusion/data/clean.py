"""Cleaning of validated bars: gaps against the calendar, missing values, corporate actions, volume anomalies.

Every function returns the new frame and a count of what it changed, so the ingest report can show each repair.
Inputs are canonical bars sorted by (symbol, ts).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from finfusion.data.calendar import Frequency, SessionCalendar, from_us, to_us
from finfusion.data.schema import PRICE_FIELDS

MissingPolicy = Literal["flag", "ffill", "drop"]

#: Trailing window (bars) and minimum history of the robust volume z-score.
VOLUME_WINDOW = 63
VOLUME_MIN_HISTORY = 20


def count_gaps(bars: pl.DataFrame, calendar: SessionCalendar, freq: Frequency) -> dict[str, int]:
    """Missing bars per symbol: calendar bar ends between the symbol's first and last bar that have no row."""
    stats = bars.group_by("symbol").agg(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"), pl.len())
    if stats.height == 0:
        return {}
    first, last = to_us(stats["first"]), to_us(stats["last"])
    expected = calendar.expected_bar_ends(freq, int(first.min()), int(last.max()))
    n_expected = np.searchsorted(expected, last, side="right") - np.searchsorted(expected, first, side="left")
    gaps = n_expected - stats["len"].to_numpy()
    return {s: int(g) for s, g in zip(stats["symbol"].to_list(), gaps, strict=True) if g > 0}


def fill_gaps(bars: pl.DataFrame, calendar: SessionCalendar, freq: Frequency) -> tuple[pl.DataFrame, int]:
    """Insert every missing bar: open = high = low = close = the previous close, volume 0, `filled` = True."""
    gaps = count_gaps(bars, calendar, freq)
    if not gaps:
        return bars, 0
    frames = []
    for symbol in gaps:
        ts = to_us(bars.filter(pl.col("symbol") == symbol)["ts"])
        expected = calendar.expected_bar_ends(freq, int(ts[0]), int(ts[-1]))
        frames.append(pl.DataFrame({"symbol": symbol, "ts": from_us(np.setdiff1d(expected, ts), "ts")}))
    inserted = pl.concat(frames).with_columns(pl.lit(True).alias("__fill"))
    out = pl.concat([bars.with_columns(pl.lit(False).alias("__fill")), inserted], how="diagonal_relaxed")
    return forward_fill_prices(out.sort("symbol", "ts")), inserted.height


def forward_fill_prices(bars: pl.DataFrame) -> pl.DataFrame:
    """On rows where the boolean column `__fill` is true, set open/high/low/close to the previous close of the
    symbol (adj_close and adj_factor carried forward too) and volume to 0, and mark them `filled`. Drops `__fill`."""
    fill = pl.col("__fill")
    out = bars.with_columns(
        pl.when(fill).then(None).otherwise(pl.col("close")).forward_fill().over("symbol").alias("close")
    )
    out = out.with_columns(
        [
            pl.when(fill).then(pl.col("close")).otherwise(pl.col(c)).alias(c)
            for c in PRICE_FIELDS[:3]
            if c in out.columns
        ]
    )
    carried = [c for c in ("adj_close", "adj_factor") if c in out.columns]
    out = out.with_columns(
        [pl.when(fill).then(None).otherwise(pl.col(c)).forward_fill().over("symbol").alias(c) for c in carried]
    )
    if "volume" in out.columns:
        out = out.with_columns(pl.when(fill).then(0.0).otherwise(pl.col("volume")).alias("volume"))
    previous = pl.col("filled").fill_null(False) if "filled" in out.columns else pl.lit(False)
    return out.with_columns((previous | fill).alias("filled")).drop("__fill")


def adjust_from_adj_close(bars: pl.DataFrame) -> pl.DataFrame:
    """adj_factor = adj_close / close (the multiplier that turns raw prices into adjusted ones)."""
    return bars.with_columns((pl.col("adj_close") / pl.col("close")).alias("adj_factor"))


def adjust_from_actions(bars: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    """Backward adjustment from explicit corporate actions [symbol, ex_ts, split_ratio, dividend].

    Each event multiplies every bar strictly before its ex-date by f = (1 / split_ratio) * (1 - dividend / close of
    the last bar before the ex-date); adj_factor(t) is the product of f over events after t, and adj_close = close *
    adj_factor. Backward adjustment uses events after t: use adjusted returns, not adjusted levels, as features
    (the return from t-1 to t depends only on events between them).
    """
    events = (
        actions.sort("ex_ts")
        .join_asof(
            bars.select("symbol", pl.col("ts").alias("prev_ts"), "close").sort("prev_ts"),
            left_on="ex_ts",
            right_on="prev_ts",
            by="symbol",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .with_columns(
            ((1.0 / pl.col("split_ratio")) * (1.0 - pl.col("dividend").fill_null(0.0) / pl.col("close"))).alias("f")
        )
        .sort("symbol", "ex_ts")
        .with_columns(pl.col("f").reverse().cum_prod().reverse().over("symbol").alias("later_product"))
        .select("symbol", "ex_ts", "later_product")
        .sort("ex_ts")
    )
    out = bars.sort("ts").join_asof(
        events,
        left_on="ts",
        right_on="ex_ts",
        by="symbol",
        strategy="forward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    out = out.with_columns(pl.col("later_product").fill_null(1.0).alias("adj_factor")).drop("ex_ts", "later_product")
    return out.with_columns((pl.col("close") * pl.col("adj_factor")).alias("adj_close")).sort("symbol", "ts")


def flag_volume_anomalies(bars: pl.DataFrame, threshold: float) -> tuple[pl.DataFrame, int]:
    """volume_anomaly = |robust z| of log(1 + volume) against the trailing window (excluding the bar) > threshold.

    The centre is the trailing median m and the scale 1.2533 x the trailing mean of |x - m| (the mean absolute
    deviation around the median, which equals the standard deviation for normal data), both from bars before t
    only, so the flag at t never depends on later bars. The median keeps one spike from moving the centre.
    """
    past = {"window_size": VOLUME_WINDOW, "min_samples": VOLUME_MIN_HISTORY}
    x = bars.select(pl.col("volume").log1p().alias("x"), "symbol")
    x = x.with_columns(pl.col("x").rolling_median(**past).over("symbol").alias("median"))
    x = x.with_columns(
        ((pl.col("x") - pl.col("median")).abs().rolling_mean(**past) * 1.2533).over("symbol").alias("spread")
    )
    before = x.select("x", pl.col("median").shift(1).over("symbol"), pl.col("spread").shift(1).over("symbol"))
    flag = before.select(
        (((pl.col("x") - pl.col("median")) / pl.col("spread")).abs() > threshold) & (pl.col("spread") > 0)
    ).to_series()
    out = bars.with_columns(flag.fill_null(False).alias("volume_anomaly"))
    return out, int(out["volume_anomaly"].sum())
