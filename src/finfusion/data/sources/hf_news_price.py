"""The `oliverwang15/us_stock_news_with_price` schema: one row per news item with its stock, text, the trading day it
maps to and the closes of the 30 trading days before and 15 after it (`ts_-30` ... `ts_15`).

What it has, and so what we store:
- texts: `title` + `content`, published on `date`. A date without a time is taken as known at the END of that day
  in the exchange's time zone (conservative: it counts for the next session, never the same one).
- bars: one close per (stock, trading day), reconstructed from the `ts_k` columns (`ts_k` is the close k sessions
  after `trading_date`). The dataset has no open, high, low or volume: those fields are stored as null and the
  dataset's metadata says `fields: [close]`. Items that disagree about the same day's close are counted; the latest
  item's value is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from finfusion.data.calendar import calendar_covering
from finfusion.data.ingest import BarOptions, TextOptions, prepare_bar_ingest, prepare_text_ingest, write_prepared
from finfusion.data.lake import Lake
from finfusion.data.report import IngestReport
from finfusion.data.schema import SOURCE_FILE, SOURCE_ROW
from finfusion.data.sources.csv_parquet import list_files, read_file
from finfusion.data.timestamps import parse_instants
from finfusion.data.validate import fail_at, parse_numbers, require_columns
from finfusion.errors import DataValidationError, DownloadError

HUB_REPO = "oliverwang15/us_stock_news_with_price"
SOURCE = "hf-news-price"
OFFSET_RE = re.compile(r"^ts_(-?\d+)$")
REQUIRED = ["date", "stock", "title", "content", "trading_date"]


def read_news_price(path: Path) -> pl.DataFrame:
    """All files at `path` as one raw frame, columns as they are, with `_file` and `_row`."""
    return pl.concat(
        [read_file(file, aliases=None, mapping={})[0] for file in list_files(path)], how="diagonal_relaxed"
    )


def offsets(columns: list[str]) -> dict[str, int]:
    """{'ts_-30': -30, ..., 'ts_15': 15} for the offset columns present."""
    return {c: int(m.group(1)) for c in columns if (m := OFFSET_RE.match(c))}


def split_news_price(raw: pl.DataFrame, calendar_name: str = "XNYS") -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(raw texts, raw close-only bars, number of conflicting closes) from rows of the schema."""
    file = raw[SOURCE_FILE][0] if raw.height else "input"
    require_columns(raw, REQUIRED, file, {})
    columns = offsets(raw.columns)
    if not columns:
        raise DataValidationError("no price columns ts_-30 ... ts_15", file=file, field="ts_0")
    calendar = calendar_covering(calendar_name, (1990, 2030))
    trading = parse_instants(raw, "trading_date", tz="UTC", date_format=None, rename={})
    dates = trading.dt.date().to_numpy().astype("datetime64[D]")
    idx, is_session = calendar.session_index_of_dates(dates)
    fail_at(raw, pl.Series(~is_session), "trading_date", f"{{value}} is not a {calendar_name} session", {})
    numbers = parse_numbers(raw, list(columns), {})
    texts = _texts(raw, calendar.tz)
    long = []
    for column, k in columns.items():
        session = idx + k
        valid = (session >= 0) & (session < len(calendar))
        long.append(
            numbers.select(
                pl.col("stock").cast(pl.String).alias("symbol"),
                pl.Series("ts", calendar.sessions[np.clip(session, 0, len(calendar) - 1)]).cast(pl.Date),
                pl.col(column).alias("close"),
                pl.Series("__valid", valid),
                pl.col("date").cast(pl.String).alias("__order"),
                SOURCE_FILE,
                SOURCE_ROW,
            )
        )
    closes = pl.concat(long).filter(pl.col("__valid") & pl.col("close").is_not_null()).drop("__valid")
    spread = closes.group_by("symbol", "ts").agg((pl.col("close").max() - pl.col("close").min()).alias("spread"))
    conflicts = int(spread.filter(pl.col("spread") > 1e-6).height)
    bars = closes.sort("symbol", "ts", "__order").unique(subset=["symbol", "ts"], keep="last", maintain_order=True)
    return texts, bars.drop("__order").sort("symbol", "ts"), conflicts


def _texts(raw: pl.DataFrame, tz: str) -> pl.DataFrame:
    date_only = raw.schema["date"] == pl.Date or (
        raw.schema["date"] == pl.String and raw["date"].drop_nulls().str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    )
    published = parse_instants(raw, "date", tz=tz, date_format=None, rename={})
    if date_only:
        end_of_day = published.dt.convert_time_zone(tz).dt.offset_by("1d").dt.offset_by("-1us")
        published = end_of_day.dt.convert_time_zone("UTC")
    refs = pl.concat_str(pl.col(SOURCE_FILE), pl.lit(":"), pl.col(SOURCE_ROW).cast(pl.String))
    return raw.select(
        published.alias("published_at"),
        pl.col("stock").cast(pl.String).alias("symbols"),
        pl.col("title").cast(pl.String),
        pl.col("content").cast(pl.String).alias("body"),
        refs.alias("source_ref"),
        SOURCE_FILE,
        SOURCE_ROW,
    )


def ingest_news_price(lake: Lake, path: Path, dataset: str = "news_price") -> list[IngestReport]:
    raw = read_news_price(path)
    texts, bars, conflicts = split_news_price(raw)
    bar_options = BarOptions(
        dataset=dataset,
        freq="1d",
        fields=("close",),
        source=SOURCE,
        notes=["one close per trading day, rebuilt from ts_-30..ts_15; no open/high/low/volume in this source"],
    )
    text_options = TextOptions(
        dataset=dataset, source=SOURCE, notes=["dates without a time are taken as known at the end of that day"]
    )
    parts = [prepare_bar_ingest(bars, bar_options), prepare_text_ingest(texts, text_options)]
    parts[0].report.count("conflicting_closes_latest_kept", conflicts)
    return write_prepared(lake, parts)


def download_news_price(dest: Path, repo: str = HUB_REPO) -> Path:
    """Fetch the dataset through the `datasets` library (a hub name, or a local folder of parquet files) and write
    each split to `dest/<split>.parquet`. Only runs when the user asks (`finfusion data download hf-news`)."""
    try:
        import datasets
    except ImportError as exc:
        raise DownloadError("the 'datasets' package is needed: pip install 'finfusion[hub]'") from exc
    try:
        loaded = datasets.load_dataset(repo)
    except Exception as exc:  # the hub client raises many types (connection, missing repo, auth)
        raise DownloadError(f"could not load '{repo}' through datasets: {exc}") from exc
    dest.mkdir(parents=True, exist_ok=True)
    for split, table in loaded.items():
        target = dest / f"{split}.parquet"
        tmp = target.with_name(f".{target.name}.tmp")
        table.to_parquet(str(tmp))
        tmp.replace(target)
    return dest
