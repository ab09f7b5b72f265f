"""Canonical table schemas of the lake. Every write goes through `TableSchema.conform`.

Conventions:
- Every timestamp is UTC with microsecond precision.
- A bar's `ts` is the instant the bar closed, so a bar is known at `ts` (point-in-time by construction). A daily
  bar's `ts` is its session's close (half days included), taken from the exchange calendar.
- A text's `published_at` is the instant it became public.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")
FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

#: Columns carried alongside raw rows so that every error can name the file and row it came from.
SOURCE_FILE = "_file"
SOURCE_ROW = "_row"
PROVENANCE_COLUMNS = (SOURCE_FILE, SOURCE_ROW)


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    required: bool = True
    nullable: bool = False


@dataclass(frozen=True)
class TableSchema:
    """A table kind of the lake: its columns, primary key, time column and hive partition columns."""

    kind: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str | None
    partition_by: tuple[str, ...]
    #: Derived tables (features, token components) carry any number of further columns of this type.
    extra_dtype: pl.DataType | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def file_columns(self) -> list[Column]:
        """Columns stored inside the Parquet files (partition columns live in the path)."""
        return [c for c in self.columns if c.name not in self.partition_by]

    def with_absent(self, frame: FrameT) -> FrameT:
        """`frame` (eager or lazy) plus a null column for each optional column of the schema it lacks, as in files
        written before that column existed; its own columns keep their order, the added ones follow."""
        names = frame.collect_schema().names()
        absent = [c for c in self.columns if not c.required and c.name not in names]
        return frame.with_columns(pl.lit(None, dtype=c.dtype).alias(c.name) for c in absent) if absent else frame

    def conform(self, df: pl.DataFrame) -> pl.DataFrame:
        """Select the schema's columns in order, cast to their types and add absent optional columns as null.

        Raises KeyError naming a missing required column; callers validate before conforming, so this is a guard.
        """
        exprs = []
        for col in self.columns:
            if col.name in df.columns:
                exprs.append(pl.col(col.name).cast(col.dtype, strict=True))
            elif col.required:
                raise KeyError(f"required column '{col.name}' is missing")
            else:
                exprs.append(pl.lit(None, dtype=col.dtype).alias(col.name))
        if self.extra_dtype is not None:
            known = {*self.names, *PROVENANCE_COLUMNS}
            exprs += [pl.col(c).cast(self.extra_dtype, strict=True) for c in df.columns if c not in known]
        return df.select(exprs)


PRICE_FIELDS = ("open", "high", "low", "close")

#: open/high/low/volume are optional at the schema level so that close-only sources (one price per day) can be
#: stored as they are; sources that have them declare them in `BarOptions.fields`, which makes them required.
#: `label` is the user's own class of the bar (`--map THEIRS=label`: -1, 0 or 1, stored as given; data/labels.py).
#: Optional columns added later are absent from older files: readers and merges treat them as null.
BARS = TableSchema(
    kind="bars",
    columns=(
        Column("symbol", pl.String),
        Column("ts", UTC_TS),
        Column("open", pl.Float64, required=False, nullable=True),
        Column("high", pl.Float64, required=False, nullable=True),
        Column("low", pl.Float64, required=False, nullable=True),
        Column("close", pl.Float64),
        Column("volume", pl.Float64, required=False, nullable=True),
        Column("adj_close", pl.Float64, required=False, nullable=True),
        Column("adj_factor", pl.Float64, required=False, nullable=True),
        Column("filled", pl.Boolean, required=False, nullable=True),
        Column("volume_anomaly", pl.Boolean, required=False, nullable=True),
        Column("label", pl.Int64, required=False, nullable=True),
    ),
    key=("symbol", "ts"),
    time_column="ts",
    partition_by=("symbol",),
)

TEXT = TableSchema(
    kind="text",
    columns=(
        Column("id", pl.String),
        Column("published_at", UTC_TS),
        Column("symbols", pl.List(pl.String)),
        Column("title", pl.String, nullable=True),
        Column("body", pl.String, nullable=True),
        Column("source", pl.String),
        Column("url", pl.String, required=False, nullable=True),
        Column("author", pl.String, required=False, nullable=True),
        Column("source_ref", pl.String, required=False, nullable=True),
    ),
    key=("id",),
    time_column="published_at",
    partition_by=(),
)

#: Ground truth of the synthetic market's planted news effects (one row per news item that carries an effect).
EVENTS = TableSchema(
    kind="events",
    columns=(
        Column("text_id", pl.String),
        Column("symbol", pl.String),
        Column("published_at", UTC_TS),
        Column("first_session_ts", UTC_TS),
        Column("effect_return", pl.Float64),
        Column("horizon", pl.Int64),
    ),
    key=("text_id", "symbol"),
    time_column="published_at",
    partition_by=(),
)

#: Point-in-time exogenous series (data/series.py): the value of `series` for the period starting at `period`, as
#: released at `published_at`; a revision is another row with a later `published_at`.
SERIES = TableSchema(
    kind="series",
    columns=(
        Column("series", pl.String),
        Column("period", UTC_TS),
        Column("published_at", UTC_TS),
        Column("value", pl.Float64),
    ),
    key=("series", "period", "published_at"),
    time_column="published_at",
    partition_by=(),
)

#: Continuous bar features: one Float64 column per feature, point-in-time per (symbol, ts).
FEATURES = TableSchema(
    kind="features",
    columns=(Column("symbol", pl.String), Column("ts", UTC_TS)),
    key=("symbol", "ts"),
    time_column="ts",
    partition_by=("symbol",),
    extra_dtype=pl.Float64,
)

#: Price-action tokens: the composite token per bar and its components as further String columns.
TOKENS = TableSchema(
    kind="tokens",
    columns=(Column("symbol", pl.String), Column("ts", UTC_TS), Column("token", pl.String)),
    key=("symbol", "ts"),
    time_column="ts",
    partition_by=("symbol",),
    extra_dtype=pl.String,
)

#: Text embeddings, one row per (encoder, text hash). The dataset name is the encoder's slug; `bucket` (the first
#: two hex characters of the hash) spreads rows over 256 files so that adding texts rewrites few of them.
EMBEDDINGS = TableSchema(
    kind="embeddings",
    columns=(
        Column("bucket", pl.String),
        Column("text_hash", pl.String),
        Column("vector", pl.List(pl.Float32)),
        Column("n_chunks", pl.Int64),
    ),
    key=("text_hash",),
    time_column=None,
    partition_by=("bucket",),
)

#: Model forecasts, long format: one row per (symbol, decision instant, horizon step, target channel). The dataset
#: name is the run (or model version) that made them. `point` is in the target's own units (denormalised); quantile
#: and sampled-path columns ride along as further Float64 columns named `q0.1`, `q0.5`, ... and `sample_0`, ...
FORECASTS = TableSchema(
    kind="forecasts",
    columns=(
        Column("symbol", pl.String),
        Column("origin_ts", UTC_TS),
        Column("step", pl.Int64),
        Column("target", pl.String),
        Column("point", pl.Float64, nullable=True),
        Column("realised", pl.Float64, required=False, nullable=True),
    ),
    key=("symbol", "origin_ts", "step", "target"),
    time_column="origin_ts",
    partition_by=("symbol",),
    extra_dtype=pl.Float64,
)

#: Portfolio weights per decision instant, one row per (ts, symbol); the dataset name is the model that made them.
WEIGHTS = TableSchema(
    kind="weights",
    columns=(
        Column("ts", UTC_TS),
        Column("symbol", pl.String),
        Column("weight", pl.Float64),
        Column("model_version", pl.String),
    ),
    key=("ts", "symbol"),
    time_column="ts",
    partition_by=(),
)

#: Movement (up / down) predictions, one row per (symbol, decision instant); the dataset name is the run that made
#: them. `label` is the realised class (1 up, 0 down; null when unknown or inside the dead band).
MOVEMENTS = TableSchema(
    kind="movements",
    columns=(
        Column("symbol", pl.String),
        Column("origin_ts", UTC_TS),
        Column("prob_up", pl.Float64),
        Column("predicted", pl.Int64),
        Column("label", pl.Int64, nullable=True),
    ),
    key=("symbol", "origin_ts"),
    time_column="origin_ts",
    partition_by=("symbol",),
)

#: Relevance scores of the dual-tower family: per stock, decision instant and horizon (days), the score in [-1, 1],
#: the up and down probabilities, and the label and forward log return when known.
RELEVANCE = TableSchema(
    kind="relevance",
    columns=(
        Column("symbol", pl.String),
        Column("origin_ts", UTC_TS),
        Column("horizon_days", pl.Int64),
        Column("score", pl.Float64),
        Column("prob_up", pl.Float64),
        Column("prob_down", pl.Float64),
        Column("label", pl.Float64, nullable=True),
        Column("forward_return", pl.Float64, nullable=True),
    ),
    key=("symbol", "origin_ts", "horizon_days"),
    time_column="origin_ts",
    partition_by=("symbol",),
)

#: Masked-LM scores of a token model per chunk of a symbol's tokens: the chunk's first and last bar, its tokens, the
#: masked positions, how many the model restored and their mean surprisal (bits).
TOKEN_SCORES = TableSchema(
    kind="token_scores",
    columns=(
        Column("symbol", pl.String),
        Column("first_ts", UTC_TS),
        Column("last_ts", UTC_TS),
        Column("tokens", pl.Int64),
        Column("masked", pl.Int64),
        Column("restored", pl.Int64),
        Column("surprisal_bits", pl.Float64, nullable=True),
    ),
    key=("symbol", "first_ts"),
    time_column="first_ts",
    partition_by=("symbol",),
)

#: Class predictions of a token classifier per symbol, decision instant and label set: the probability of class 1
#: (up / high volatility / trend), the predicted class and the label when known.
CLASSIFICATIONS = TableSchema(
    kind="classifications",
    columns=(
        Column("symbol", pl.String),
        Column("origin_ts", UTC_TS),
        Column("label_set", pl.String),
        Column("prob_positive", pl.Float64),
        Column("predicted", pl.Int64),
        Column("label", pl.Int64, nullable=True),
    ),
    key=("symbol", "origin_ts", "label_set"),
    time_column="origin_ts",
    partition_by=("symbol",),
)

#: Limit-order-book snapshots after each event (data/sources/lobster.py): per side the level prices (null at an
#: empty level) and sizes as lists, best level first; `event` numbers the events of a symbol's day.
ORDERBOOKS = TableSchema(
    kind="orderbooks",
    columns=(
        Column("symbol", pl.String),
        Column("ts", UTC_TS),
        Column("event", pl.Int64),
        Column("event_type", pl.Int64),
        Column("ask_price", pl.List(pl.Float64)),
        Column("bid_price", pl.List(pl.Float64)),
        Column("ask_size", pl.List(pl.Float64)),
        Column("bid_size", pl.List(pl.Float64)),
    ),
    key=("symbol", "ts", "event"),
    time_column="ts",
    partition_by=("symbol",),
)

#: Every table kind; predictions of the families last.
ALL_SCHEMAS = (BARS, TEXT, EVENTS, SERIES, ORDERBOOKS, FEATURES, TOKENS, EMBEDDINGS, FORECASTS, WEIGHTS, MOVEMENTS)
ALL_SCHEMAS += (RELEVANCE, TOKEN_SCORES, CLASSIFICATIONS)
SCHEMAS: dict[str, TableSchema] = {s.kind: s for s in ALL_SCHEMAS}
