"""The DuckDB catalog: dataset listing and point-in-time reads of bars and texts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from finfusion.data.catalog import Catalog
from finfusion.data.lake import Lake
from finfusion.data.schema import BARS, TEXT
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.data.sources.synthetic_ingest import ingest_market
from finfusion.errors import LakeError

T = datetime(2019, 6, 14, 20, 0, tzinfo=UTC)  # a Friday, the session still open (close 20:00 UTC is at/after t)


def market_lake(root: Path) -> Catalog:
    ingest_market(
        Lake(root), generate_market(SyntheticConfig(n_symbols=4, start="2019-01-01", end="2019-12-31", seed=3))
    )
    return Catalog(Lake(root))


def test_lists_datasets_with_counts_and_ranges(tmp_path: Path) -> None:
    catalog = market_lake(tmp_path)
    listing = catalog.datasets()
    assert listing["kind"].to_list() == ["bars", "events", "text"]
    bars = listing.row(0, named=True)
    assert bars["symbols"] == 4 and bars["freq"] == "1d"
    assert bars["rows"] == Lake(tmp_path).read("bars", "synthetic", freq="1d").height
    assert bars["first"].date() == datetime(2019, 1, 2).date()
    per_symbol = catalog.symbols("bars", "synthetic", "1d")
    assert per_symbol.height == 4 and per_symbol["rows"].sum() == bars["rows"]


def test_bars_asof_only_returns_what_was_known(tmp_path: Path) -> None:
    catalog = market_lake(tmp_path)
    known = catalog.bars_asof("synthetic", T)
    assert known["ts"].max() <= T
    assert known["ts"].max() == datetime(2019, 6, 14, 20, 0, tzinfo=UTC)  # the close at exactly t is known at t
    earlier = catalog.bars_asof("synthetic", T - timedelta(microseconds=1))
    assert earlier["ts"].max() == datetime(2019, 6, 13, 20, 0, tzinfo=UTC)
    one = catalog.bars_asof("synthetic", T, symbols=[known["symbol"][0]])
    assert one["symbol"].n_unique() == 1


def test_point_in_time_reads_ignore_changes_after_t(tmp_path: Path) -> None:
    catalog = market_lake(tmp_path)
    bars_before = catalog.bars_asof("synthetic", T)
    texts_before = catalog.texts_asof("synthetic", T)
    lake = Lake(tmp_path)
    bars = lake.read("bars", "synthetic", freq="1d")
    future = bars.filter(pl.col("ts") > T).with_columns(pl.col("close") * 3, pl.col("high") * 3)
    lake.write(BARS, "synthetic", future, freq="1d")
    texts = lake.read("text", "synthetic")
    late = texts.filter(pl.col("published_at") > T).with_columns(pl.lit("rewritten").alias("body"))
    lake.write(TEXT, "synthetic", late)
    assert catalog.bars_asof("synthetic", T).equals(bars_before)
    assert catalog.texts_asof("synthetic", T).equals(texts_before)
    assert not catalog.bars_asof("synthetic", T + timedelta(days=30)).equals(bars_before)


def test_texts_asof_filters_by_symbol_and_start(tmp_path: Path) -> None:
    catalog = market_lake(tmp_path)
    symbol = catalog.symbols("text", "synthetic")["symbol"][0]
    start = T - timedelta(days=30)
    texts = catalog.texts_asof("synthetic", T, symbols=[symbol], start=start)
    assert texts.height > 0
    assert all(symbol in s for s in texts["symbols"].to_list())
    assert texts["published_at"].min() >= start and texts["published_at"].max() <= T


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LakeError, match="no bars dataset 'nope'"):
        Catalog(Lake(tmp_path)).bars_asof("nope", T)
