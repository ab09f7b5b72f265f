"""Texts known at each bar: ids, pooled embeddings, attention-ready padded lists, NO_NEWS flag and coverage.

When a text is known. A text published at instant p is known at a bar closing at `ts` iff p < ts (strictly). For daily
bars (`ts` = the session's close) this is exactly `SessionCalendar.first_actionable_session(p) <= bar's session`:

* published before the open or during the session -> that session's bar;
* published at or after the close, on a weekend or a holiday -> the next session's bar.

Intraday bars follow the same rule: a text counts from the first bar that ends strictly after it.

Window. An int `window` = w keeps the texts of the bar's session and the w - 1 sessions before it, i.e. those whose
first actionable session is one of the last w sessions (p >= close of session b - w, p < ts). A timedelta keeps the
texts with ts - window <= p < ts. With scope "symbol" (default) a bar sees the texts that mention its symbol; with
scope "market" every bar sees every text (a market-wide news stream, as in seed 002).

Shapes (N bars in input order, K = max_texts, D = embedding size, S = universe size, U = distinct text hashes):

* `ids`        polars frame [N rows]: symbol, ts, ids (List[String], oldest first), n_texts (all texts in the window)
* `vectors`    [U, D] float32: one row per distinct text hash referenced by `index`
* `index`      [N, K] int64: rows of `vectors` of the K most recent texts (oldest first), -1 where padded
* `mask`       [N, K] bool: True where `index` holds a text
* `mean`       [N, D] float32: mean of the embeddings of all texts in the window (zeros where `no_news`)
* `no_news`    [N] bool: no text in the window
* `coverage`   [N, S] bool: the universe symbols mentioned by any text in the window
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from finfusion.data.calendar import SessionCalendar, calendar_covering, to_us
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.features.text import vector_matrix
from finfusion.features.text_tokens import TextTokens

_NO_START = np.iinfo(np.int64).min


@dataclass(frozen=True)
class AlignedText:
    """Texts aligned to N bars (see the module docstring for the shapes)."""

    ids: pl.DataFrame
    vectors: np.ndarray
    index: np.ndarray
    mask: np.ndarray
    mean: np.ndarray
    no_news: np.ndarray
    coverage: np.ndarray
    universe: tuple[str, ...]
    #: Token ids of the texts by id, for models that encode texts themselves (None: embeddings only).
    tokens: TextTokens | None = None

    def padded(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Padded embeddings [N, K, D] (or [B, K, D] for `rows` [B]), zeros where `mask` is False."""
        index = self.index if rows is None else self.index[rows]
        if len(self.vectors) == 0:
            return np.zeros((*index.shape, self.vectors.shape[1]), dtype=np.float32)
        out = self.vectors[np.maximum(index, 0)]
        out[index < 0] = 0.0
        return out

    def tensors(self, rows: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """The sample-contract tensors of all bars or of `rows` [B]: text_emb [B, K, D], text_mask [B, K],
        text_mean [B, D], no_news [B], coverage [B, S] (float32)."""
        pick = slice(None) if rows is None else rows
        return {
            "text_emb": torch.from_numpy(self.padded(rows)),
            "text_mask": torch.from_numpy(self.mask[pick].copy()),
            "text_mean": torch.from_numpy(self.mean[pick].copy()),
            "no_news": torch.from_numpy(self.no_news[pick].copy()),
            "coverage": torch.from_numpy(self.coverage[pick].astype(np.float32)),
        }


def bars_calendar(lake: Lake, dataset: str, ts: pl.Series) -> SessionCalendar:
    """The exchange calendar of the bars `dataset` (its metadata; XNYS when it names none) covering the years of
    the instants `ts`."""
    meta = lake.metadata("bars", dataset)
    years = (int(ts.dt.year().min()), int(ts.dt.year().max()))
    return calendar_covering(str(meta.get("calendar", "XNYS")), years)


def align_texts_to_bars(
    bars: pl.DataFrame,
    texts: pl.DataFrame,
    embeddings: pl.DataFrame,
    calendar: SessionCalendar,
    *,
    window: int | timedelta,
    max_texts: int,
    universe: list[str] | None = None,
    scope: Literal["symbol", "market"] = "symbol",
) -> AlignedText:
    """Align `texts` [id, published_at, symbols, text_hash] to `bars` [symbol, ts] (one result row per bar).

    `embeddings` [text_hash, vector] must hold every text's hash (`load_embeddings` returns that frame). `universe`
    orders the coverage columns (default: the bars' symbols, sorted).
    """
    if max_texts < 1:
        raise FinfusionError("max_texts must be at least 1")
    if scope not in ("symbol", "market"):
        raise FinfusionError(f"unknown scope '{scope}': use 'symbol' or 'market'")
    symbols = tuple(universe if universe is not None else sorted(set(bars["symbol"].to_list())))
    bar_ts = to_us(bars["ts"])
    lo = _window_start(bar_ts, calendar, window)
    table, vectors = text_table(texts, embeddings)
    keys = bars["symbol"] if scope == "symbol" else pl.Series("symbol", ["*"] * bars.height)
    stream = _stream(table, scope)
    segments = _segments(keys, stream)
    start, end = _window_positions(segments, lo, bar_ts, stream)
    n_texts = end - start
    first = np.maximum(start, end - max_texts)
    slots = np.arange(max_texts)
    mask = slots[None, :] < (end - first)[:, None]  # [N, K]
    positions = np.where(mask, first[:, None] + slots[None, :], 0)
    rows = stream["row"].to_numpy().astype(np.int64)
    index = np.where(mask, rows[positions] if rows.size else 0, -1).astype(np.int64)
    mean = _window_means(segments, start, end, stream, vectors)
    pairs_bar, pairs_pos = _pairs(start, end)
    ids = bars.select("symbol", "ts").with_columns(
        ids=_list_column(stream["id"].to_numpy()[pairs_pos], n_texts),
        n_texts=pl.Series(n_texts, dtype=pl.Int64),
    )
    coverage = _coverage(pairs_bar, stream["text"].to_numpy()[pairs_pos], table, symbols, bars.height)
    return AlignedText(ids, vectors, index, mask, mean, n_texts == 0, coverage, symbols)


def _window_start(bar_ts: np.ndarray, calendar: SessionCalendar, window: int | timedelta) -> np.ndarray:
    """Earliest publication instant [N] (inclusive) of the texts in each bar's window."""
    if isinstance(window, timedelta):
        if window <= timedelta(0):
            raise FinfusionError("a time window must be positive")
        return bar_ts - window // timedelta(microseconds=1)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise FinfusionError(f"window must be a positive number of sessions or a timedelta, not {window!r}")
    session = np.searchsorted(calendar.closes, bar_ts, side="left")
    if bar_ts.size and session.max() >= len(calendar.closes):
        raise FinfusionError(f"a bar lies after the last session of calendar {calendar.name} ({calendar.last_year})")
    previous = session - window
    return np.where(previous >= 0, calendar.closes[np.maximum(previous, 0)], _NO_START)


def text_table(texts: pl.DataFrame, embeddings: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Texts sorted by (published_at, id) with `text` (row number) and `row` (row of the vectors [U, D])."""
    missing = {"id", "published_at", "symbols", "text_hash"} - set(texts.columns)
    if missing:
        raise FinfusionError(
            f"texts lack column(s) {sorted(missing)} (add text_hash with features.text.with_text_hash)"
        )
    table = texts.select("id", "published_at", "symbols", "text_hash").sort("published_at", "id")
    hashes = table.select("text_hash").unique(maintain_order=True).with_row_index("row")
    known = hashes.join(embeddings.select("text_hash", "vector"), on="text_hash", how="left", maintain_order="left")
    absent = known.filter(pl.col("vector").is_null())
    if absent.height:
        raise FinfusionError(
            f"{absent.height:,} text hash(es) have no embedding (e.g. {absent['text_hash'][0]}): run `finfusion embed`"
        )
    table = table.with_row_index("text").join(hashes, on="text_hash", how="left", maintain_order="left")
    if known.height == 0:
        return table, np.zeros((0, vector_matrix(embeddings["vector"].head(1)).shape[1]), dtype=np.float32)
    return table, vector_matrix(known["vector"])


def _stream(table: pl.DataFrame, scope: str) -> pl.DataFrame:
    """The texts each bar key sees [T rows: key, published_us, id, text, row], sorted by (key, published_at, id)."""
    columns = [pl.col("published_at").dt.epoch("us").alias("published_us"), "id", "text", "row"]
    if scope == "market":
        return table.select(pl.lit("*").alias("key"), *columns)
    exploded = table.explode("symbols").filter(pl.col("symbols").is_not_null()).unique(["text", "symbols"])
    return exploded.select(pl.col("symbols").alias("key"), *columns).sort("key", "published_us", "id")


def _segments(keys: pl.Series, stream: pl.DataFrame) -> list[tuple[np.ndarray, int, int]]:
    """(bar rows, first, last + 1 stream position) for each bar key that has texts."""
    spans = (
        stream.with_row_index("pos")
        .group_by("key")
        .agg(pl.col("pos").min().alias("lo"), pl.col("pos").max().alias("hi"))
    )
    bounds = {k: (int(lo), int(hi) + 1) for k, lo, hi in spans.iter_rows()}
    groups = pl.DataFrame({"key": keys}).with_row_index("bar").group_by("key").agg("bar")
    return [(np.asarray(rows, dtype=np.int64), *bounds[k]) for k, rows in groups.iter_rows() if k in bounds]


def _window_positions(
    segments: list[tuple[np.ndarray, int, int]], lo: np.ndarray, bar_ts: np.ndarray, stream: pl.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Stream positions [start, end) [N] of each bar's window (empty where its key has no texts)."""
    start = np.zeros(len(lo), dtype=np.int64)
    end = np.zeros(len(lo), dtype=np.int64)
    published = stream["published_us"].to_numpy()
    for rows, first, last in segments:
        segment = published[first:last]
        start[rows] = first + np.searchsorted(segment, lo[rows], side="left")
        end[rows] = first + np.searchsorted(segment, bar_ts[rows], side="left")
    return start, np.maximum(start, end)


def _window_means(
    segments: list[tuple[np.ndarray, int, int]],
    start: np.ndarray,
    end: np.ndarray,
    stream: pl.DataFrame,
    vectors: np.ndarray,
) -> np.ndarray:
    """Mean embedding [N, D] of each window, by differences of per-key cumulative sums (float64)."""
    mean = np.zeros((len(start), vectors.shape[1]), dtype=np.float32)
    rows_of = stream["row"].to_numpy()
    for rows, first, last in segments:
        cumulative = np.zeros((last - first + 1, vectors.shape[1]), dtype=np.float64)  # [T_key + 1, D]
        np.cumsum(vectors[rows_of[first:last]], axis=0, dtype=np.float64, out=cumulative[1:])
        count = end[rows] - start[rows]
        has = count > 0
        picked = rows[has]
        sums = cumulative[end[picked] - first] - cumulative[start[picked] - first]
        mean[picked] = (sums / count[has, None]).astype(np.float32)
    return mean


def _pairs(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (bar, stream position) in the windows, bar-major and oldest first: two arrays [P]."""
    count = end - start
    bar = np.repeat(np.arange(len(start)), count)
    offsets = np.concatenate([[0], np.cumsum(count)])
    position = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - start, count)
    return bar, position.astype(np.int64)


def _list_column(values: np.ndarray, counts: np.ndarray) -> pl.Series:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    array = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.tolist(), type=pa.string()))
    return pl.Series("ids", pl.from_arrow(array), dtype=pl.List(pl.String))


def _coverage(
    pair_bar: np.ndarray, pair_text: np.ndarray, table: pl.DataFrame, universe: tuple[str, ...], n_bars: int
) -> np.ndarray:
    """[N, S] bool: symbols of `universe` mentioned by the texts of each bar's window."""
    coverage = np.zeros((n_bars, len(universe)), dtype=bool)
    codes = pl.DataFrame({"symbol": list(universe)}, schema={"symbol": pl.String}).with_row_index("code")
    mentions = (
        table.select("text", pl.col("symbols").alias("symbol")).explode("symbol").join(codes, on="symbol", how="inner")
    )
    hits = pl.DataFrame({"bar": pair_bar, "text": pair_text}, schema={"bar": pl.Int64, "text": pl.UInt32}).join(
        mentions.select("text", "code"), on="text", how="inner"
    )
    coverage[hits["bar"].to_numpy(), hits["code"].to_numpy()] = True
    return coverage
