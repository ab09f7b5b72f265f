"""The lake: schema-checked, partitioned, merged, idempotent and atomic writes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from finfusion.data.lake import Lake, resolve_root
from finfusion.data.schema import BARS, TEXT
from finfusion.errors import LakeError
from tests.conftest import snapshot


def bars(symbols: list[str], days: list[int], close: float = 10.0) -> pl.DataFrame:
    rows = [
        {"symbol": s, "ts": datetime(2014, 1, d, 21, tzinfo=UTC), "open": close, "high": close + 1,
         "low": close - 1, "close": close, "volume": 100.0}
        for s in symbols for d in days
    ]  # fmt: skip
    return pl.DataFrame(rows)


def test_daily_bars_are_one_file_per_symbol(lake_root: Path) -> None:
    lake = Lake(lake_root)
    lake.write(BARS, "d", bars(["AAA", "BBB"], [2, 3]), freq="1d")
    files = sorted(p.relative_to(lake_root).as_posix() for p in lake_root.rglob("*.parquet"))
    assert files == [
        "kind=bars/dataset=d/freq=1d/symbol=AAA/part-00000001.parquet",
        "kind=bars/dataset=d/freq=1d/symbol=BBB/part-00000001.parquet",
    ]
    assert "symbol" not in pq.read_schema(lake_root / files[0]).names  # partition columns live in the path


def test_intraday_bars_and_text_are_split_by_year(lake_root: Path) -> None:
    lake = Lake(lake_root)
    frame = pl.DataFrame({
        "symbol": ["AAA", "AAA"], "ts": [datetime(2014, 12, 31, 20, tzinfo=UTC), datetime(2015, 1, 2, 15, tzinfo=UTC)],
        "open": [1.0, 1.0], "high": [1.0, 1.0], "low": [1.0, 1.0], "close": [1.0, 1.0], "volume": [1.0, 1.0],
    })  # fmt: skip
    lake.write(BARS, "m", frame, freq="1m")
    years = sorted(p.parent.name for p in lake_root.rglob("*.parquet"))
    assert years == ["year=2014", "year=2015"]


def test_rewrite_of_same_rows_is_byte_identical(lake_root: Path) -> None:
    lake = Lake(lake_root)
    lake.write(BARS, "d", bars(["AAA"], [2, 3]), freq="1d")
    before = snapshot(lake_root)
    result = lake.write(BARS, "d", bars(["AAA"], [2, 3]), freq="1d")
    assert result.files_written == 0 and result.new_rows == 0 and result.updated_rows == 0
    assert snapshot(lake_root) == before


def test_merge_adds_new_rows_and_replaces_changed_ones(lake_root: Path) -> None:
    lake = Lake(lake_root)
    lake.write(BARS, "d", bars(["AAA"], [2, 3]), freq="1d")
    result = lake.write(BARS, "d", pl.concat([bars(["AAA"], [3], close=20.0), bars(["AAA"], [6])]), freq="1d")
    assert (result.new_rows, result.updated_rows) == (1, 1)
    stored = lake.read("bars", "d", freq="1d")
    assert stored["close"].to_list() == [10.0, 20.0, 10.0]
    assert stored["ts"].is_sorted()


def test_failed_write_leaves_every_partition_unchanged(lake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = Lake(lake_root)
    lake.write(BARS, "d", bars(["AAA", "BBB"], [2]), freq="1d")
    before = snapshot(lake_root)
    calls = {"n": 0}
    real_write = pl.DataFrame.write_parquet

    def failing_write(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real_write(self, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing_write)
    with pytest.raises(OSError, match="disk full"):
        lake.write(BARS, "d", bars(["AAA", "BBB"], [3]), freq="1d")
    assert snapshot(lake_root) == before  # the first partition was staged but never renamed into place


def test_schema_is_checked_on_write(lake_root: Path) -> None:
    with pytest.raises(KeyError, match="close"):
        Lake(lake_root).write(BARS, "d", bars(["AAA"], [2]).drop("close"), freq="1d")


def test_bad_names_are_refused(lake_root: Path) -> None:
    lake = Lake(lake_root)
    with pytest.raises(LakeError):
        lake.write(BARS, "../escape", bars(["AAA"], [2]), freq="1d")
    with pytest.raises(LakeError):
        lake.write(BARS, "d", bars(["../x"], [2]), freq="1d")
    assert not lake_root.exists() or not any(lake_root.rglob("*.parquet"))


def test_text_round_trip(lake_root: Path) -> None:
    lake = Lake(lake_root)
    texts = pl.DataFrame({
        "id": ["a", "b"], "published_at": [datetime(2014, 1, 2, tzinfo=UTC)] * 2, "symbols": [["AAA"], ["AAA", "BBB"]],
        "title": ["t1", None], "body": ["b1", "b2"], "source": ["s", "s"],
    })  # fmt: skip
    lake.write(TEXT, "news", texts, metadata={"source": "test"})
    back = lake.read("text", "news")
    assert back["symbols"].to_list() == [["AAA"], ["AAA", "BBB"]]
    assert lake.metadata("text", "news")["source"] == "test"
    assert lake.datasets() == [("text", "news", None)]


def test_root_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FINFUSION_LAKE", str(tmp_path / "env"))
    assert resolve_root() == tmp_path / "env"
    assert resolve_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("FINFUSION_LAKE")
    assert resolve_root() == Path("finfusion-data")
