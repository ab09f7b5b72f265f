"""Files read in chunks and validated bucket by bucket store exactly what a whole-file read stores, and name the same
rows in errors (chunks are made tiny here so that every path is taken on small files)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from finfusion.data.ingest import BarOptions, TextOptions
from finfusion.data.lake import Lake
from finfusion.data.sources import file_ingest
from finfusion.data.sources.file_ingest import ingest_files
from finfusion.errors import DataValidationError
from tests.conftest import write_text


def long_bars(symbols: int, days: int) -> str:
    sessions = [date(2015, 3, 2) + timedelta(days=d) for d in range(days * 2)]
    sessions = [d for d in sessions if d.weekday() < 5 and d != date(2015, 4, 3)][:days]  # Good Friday
    lines = ["symbol,Date,Open,High,Low,Close,Volume"]
    lines += [
        f"S{s},{day.isoformat()},{10 + s + i / 10},{11 + s + i / 10},{9 + s + i / 10},{10.5 + s + i / 10},{100 + i}"
        for s in range(symbols)
        for i, day in enumerate(sessions)
    ]
    return "\n".join(lines) + "\n"


def stored(root: Path, kind: str) -> pl.DataFrame:
    frame = Lake(root).read(kind, "d", freq="1d" if kind == "bars" else None)
    return frame.sort(frame.columns[:2])


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_ingest, "CHUNK_BYTES", 97)  # a few rows per chunk, cut mid-row
    monkeypatch.setattr(file_ingest, "SPILL_BYTES", 2_000)  # buckets spill to disk many times


def test_chunks_and_buckets_store_what_a_whole_read_stores(
    tmp_path: Path, tiny_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_text(tmp_path / "long.csv", long_bars(symbols=7, days=30))
    ingest_files(Lake(tmp_path / "chunked"), path, BarOptions("d"), mapping={}, bucket_bytes=1_000)
    monkeypatch.setattr(file_ingest, "CHUNK_BYTES", 1 << 30)
    monkeypatch.setattr(file_ingest, "SPILL_BYTES", 1 << 30)
    ingest_files(Lake(tmp_path / "whole"), path, BarOptions("d"), mapping={}, bucket_bytes=1 << 30)
    chunked = stored(tmp_path / "chunked", "bars")
    assert chunked.height == 7 * 30
    assert chunked.equals(stored(tmp_path / "whole", "bars"))


def test_a_bad_value_in_a_later_chunk_names_its_row(tmp_path: Path, tiny_chunks: None) -> None:
    lines = long_bars(symbols=3, days=20).splitlines()
    lines[45] = lines[45].replace(",10", ",ten", 1)  # data row 45 (line 0 is the header)
    path = write_text(tmp_path / "long.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as error:
        ingest_files(Lake(tmp_path / "lake"), path, BarOptions("d"), mapping={}, bucket_bytes=500)
    assert error.value.row == 45 and error.value.file == str(path)
    assert not (tmp_path / "lake" / "_manifest.json").exists() and not (tmp_path / "lake" / "_staging").exists()


def test_quoted_newlines_never_split_a_text(tmp_path: Path, tiny_chunks: None) -> None:
    rows = [
        f'2015-03-0{1 + i % 5} 10:00,S{i},"Headline {i}","first line\nsecond line, with ""quotes"" {i}"'
        for i in range(40)
    ]
    path = write_text(tmp_path / "news.csv", "Date,Ticker,Headline,Body\n" + "\n".join(rows) + "\n")
    ingest_files(Lake(tmp_path / "lake"), path, TextOptions("d"), mapping={}, bucket_bytes=700)
    texts = stored(tmp_path / "lake", "text")
    assert texts.height == 40
    assert sorted(texts["body"].to_list()) == sorted(f'first line\nsecond line, with "quotes" {i}' for i in range(40))
