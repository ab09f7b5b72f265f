"""Exogenous series (an index, a volatility index, sentiment scores) attached to every bar as of the bar's close.

A bar at ts gets the latest exogenous row with exo.ts <= ts: a value stamped at the same instant counts as known (bar
timestamps are closes, so an index bar closing with the stock's bar is known), a later one never does.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from finfusion.errors import FinfusionError


def join_asof_exogenous(
    features: pl.DataFrame, exo: pl.DataFrame, prefix: str, *, max_staleness: timedelta | str | None = None
) -> pl.DataFrame:
    """`features` [N rows: symbol, ts, ...] plus one Float64 column `{prefix}_{name}` per value column of `exo`.

    `exo`: ts and numeric value columns, and optionally symbol, in which case rows match per symbol (per-stock
    sentiment); without it the one series serves every symbol. Each bar takes the latest exo row at or before its ts
    (of two rows at one instant, the later in `exo`); null when there is none, or when it is older than
    `max_staleness` (a timedelta or a polars duration such as "5d"). Rows keep their order.
    """
    if "ts" not in exo.columns:
        raise FinfusionError("exogenous series need a 'ts' column")
    per_symbol = "symbol" in exo.columns
    keys = ["symbol", "ts"] if per_symbol else ["ts"]
    values = [c for c in exo.columns if c not in keys]
    if not values:
        raise FinfusionError("exogenous series have no value column besides symbol and ts")
    names = {c: f"{prefix}_{c}" for c in values}
    clash = sorted(set(names.values()) & set(features.columns))
    if clash:
        raise FinfusionError(f"exogenous columns {clash} already exist in the features: choose another prefix")
    right = (
        exo.filter(pl.col("ts").is_not_null())
        .select(
            *(pl.col(k) for k in keys[:-1]),
            pl.col("ts").cast(features.schema["ts"]),
            *(pl.col(c).cast(pl.Float64).alias(names[c]) for c in values),
        )
        .unique(subset=keys, keep="last", maintain_order=True)
        .sort(keys)
    )
    if per_symbol:
        order = features.with_row_index("_row").sort("symbol", "ts")
        joined = order.join_asof(
            right, on="ts", by="symbol", tolerance=max_staleness, check_sortedness=False, coalesce=True
        )
        return joined.sort("_row").drop("_row")
    instants = features.select(pl.col("ts").unique()).sort("ts")
    table = instants.join_asof(right, on="ts", tolerance=max_staleness)
    return features.join(table, on="ts", how="left", maintain_order="left")


def series_from_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """[ts, ret_1, log_close] of one symbol's bars (sorted by ts): log return and log level of the split-adjusted
    close, each known at its bar's close."""
    if bars["symbol"].n_unique() > 1:
        raise FinfusionError("an exogenous series comes from one symbol's bars")
    bars = bars.sort("ts")
    factor = pl.col("adj_factor").fill_null(1.0) if "adj_factor" in bars.columns else pl.lit(1.0)
    log_close = (pl.col("close") * factor).log()
    return bars.select("ts", (log_close - log_close.shift(1)).alias("ret_1"), log_close.alias("log_close"))
