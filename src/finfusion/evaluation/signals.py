"""Signal files for the backtester: target weights or scores per (ts, symbol), read and checked, matched to the bars
they belong to, and laid out as a [T, A] target-weight grid (scores become top-k long/short weights).

Timing: a date matches the last bar of that session date (in the dataset's time zone), a timestamp matches the bar
closing at that very instant (naive timestamps are UTC). A weight at bar t is traded at the close of bar t.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from finfusion.data.schema import UTC_TS
from finfusion.errors import DataValidationError, FinfusionError
from finfusion.evaluation.sizing import Weighting, top_k_weights

SignalKind = Literal["weight", "score"]
KINDS: tuple[SignalKind, ...] = ("weight", "score")


@dataclass(frozen=True)
class Signals:
    """The rows of a signal file: `frame` [N rows: ts (Date or Datetime), symbol String, <kind> Float64], unique by
    (ts, symbol); `kind` is the value column, 'weight' (target weights) or 'score' (ranked into weights)."""

    frame: pl.DataFrame
    kind: SignalKind
    path: Path

    @property
    def symbols(self) -> list[str]:
        """The file's symbols, sorted."""
        return sorted(self.frame["symbol"].unique().to_list())


@dataclass(frozen=True)
class ScoreSizing:
    """How scores become weights: `top_k` names per side (None: a decile of the universe, at least 1), equal or
    score-proportional weights, long the top k only or long/short."""

    top_k: int | None = None
    weighting: Weighting = "equal"
    long_only: bool = False


def read_signals(path: Path) -> Signals:
    """A Parquet (.parquet, .pq) or CSV file with columns ts, symbol and weight or score (weight wins when both are
    there). Raises DataValidationError on a missing column, non-date ts, non-numeric value, empty key or a duplicated
    (ts, symbol)."""
    if not path.is_file():
        raise FinfusionError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(path, try_parse_dates=True)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"cannot read the file: {exc}", file=path) from exc
    kind = next((c for c in KINDS if c in frame.columns), None)
    missing = [c for c in ("ts", "symbol") if c not in frame.columns]
    if missing or kind is None:
        need = ", ".join([*missing, *(["weight or score"] if kind is None else [])])
        raise DataValidationError(f"missing column(s): {need} (expected ts, symbol and weight or score)", file=path)
    dtype = frame.schema["ts"]
    if not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
        raise DataValidationError(f"ts must be dates or timestamps, got {dtype}", file=path, field="ts")
    try:
        frame = frame.select(pl.col("ts"), pl.col("symbol").cast(pl.String), pl.col(kind).cast(pl.Float64))
    except pl.exceptions.PolarsError as exc:
        raise DataValidationError(f"'{kind}' must be numeric", file=path, field=kind) from exc
    if frame["ts"].null_count() or frame["symbol"].null_count():
        raise DataValidationError("ts and symbol must not be empty", file=path)
    duplicated = frame.select("ts", "symbol").is_duplicated()
    if duplicated.any():
        first = frame.filter(duplicated).row(0)
        raise DataValidationError(f"(ts, symbol) appears more than once, e.g. {first[0]} {first[1]}", file=path)
    return Signals(frame, kind, path)


def align_signals(signals: Signals, bar_ts: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """[N rows: symbol, <kind>, ts] with ts the bar timestamp (UTC) each signal row belongs to.

    `bar_ts`: the bars' distinct timestamps [ts UTC]; `timezone`: the dataset's, which defines session dates. Raises
    DataValidationError when a row has no bar.
    """
    frame = signals.frame
    if frame.schema["ts"] == pl.Date:
        session = pl.col("ts").dt.convert_time_zone(timezone).dt.date().alias("date")
        keys = bar_ts.group_by(session).agg(pl.col("ts").max().alias("bar_ts")).rename({"date": "ts"})
    else:
        ts = pl.col("ts")
        utc = ts.dt.replace_time_zone("UTC") if frame.schema["ts"].time_zone is None else ts.dt.convert_time_zone("UTC")
        frame = frame.with_columns(utc.cast(UTC_TS))
        keys = bar_ts.select(pl.col("ts").alias("bar_ts"), pl.col("ts")).unique()
    keyed = frame.join(keys, on="ts", how="left")
    unmatched = keyed.filter(pl.col("bar_ts").is_null())
    if unmatched.height:
        raise DataValidationError(
            f"{unmatched.height} row(s) have a ts with no bar in the dataset (first: {unmatched['ts'][0]})",
            file=signals.path, field="ts",
        )  # fmt: skip
    return keyed.drop("ts").rename({"bar_ts": "ts"})


def target_weights(
    keyed: pl.DataFrame, kind: SignalKind, ts: list[object], symbols: list[str], prices: np.ndarray, sizing: ScoreSizing
) -> np.ndarray:
    """Target weights [T, A] on the bar grid `ts` [T] x `symbols` [A] from aligned signal rows (`align_signals`).

    Weights are taken as they are; scores become top-k weights among the assets with a finite price `prices` [T, A]
    at that bar. A bar without a row in `keyed` is all NaN (no decision: positions drift); on a bar with a decision,
    an asset without a price gets weight 0.
    """
    row = {t: i for i, t in enumerate(ts)}
    col = {s: i for i, s in enumerate(symbols)}
    grid = np.full(prices.shape, np.nan)
    rows = np.array([row[t] for t in keyed["ts"].to_list()], dtype=np.int64)
    cols = np.array([col[s] for s in keyed["symbol"].to_list()], dtype=np.int64)
    grid[rows, cols] = keyed[kind].to_numpy()
    priced = np.isfinite(prices)
    if kind == "score":
        k = sizing.top_k or max(1, len(symbols) // 10)
        grid = top_k_weights(np.where(priced, grid, np.nan), k, weighting=sizing.weighting, long_only=sizing.long_only)
    decided = np.isfinite(grid).any(axis=1)
    return np.where(decided[:, None] & ~priced, 0.0, grid)
