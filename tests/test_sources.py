"""Sources: CSV/Parquet with mappings and time zones, archives, the HF news-price schema, downloads."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import Result

from finfusion.data.download import RemoteDataset, download
from finfusion.data.lake import Lake
from finfusion.data.sources.archive import sha256_file
from finfusion.data.sources.hf_news_price import download_news_price, ingest_news_price
from finfusion.data.tree_digest import tree_digest
from finfusion.errors import DownloadError
from tests.conftest import GOOD_BARS, snapshot, write_text


def test_csv_with_column_mapping_and_date_format(tmp_path: Path, cli: Callable[..., Result], lake_root: Path) -> None:
    csv = "Ticker;Trade Date;O;H;L;C;Vol\nXYZ;26.11.2014;1;2;0.5;1.5;10\nXYZ;28.11.2014;1.5;2;1;1.8;12\n"
    path = write_text(tmp_path / "in" / "prices.csv", csv.replace(";", ","))
    maps = ["Ticker=symbol", "Trade Date=ts", "O=open", "H=high", "L=low", "C=close", "Vol=volume"]
    args = [a for m in maps for a in ("--map", m)]
    result = cli("data", "ingest", "csv", str(path), "--dataset", "mine", "--date-format", "%d.%m.%Y", *args)
    assert result.exit_code == 0, result.output
    bars = Lake(lake_root).read("bars", "mine", freq="1d")
    assert bars["symbol"].to_list() == ["XYZ", "XYZ"]
    assert bars["ts"].to_list() == [datetime(2014, 11, 26, 21, tzinfo=UTC), datetime(2014, 11, 28, 18, tzinfo=UTC)]
    assert bars["close"].to_list() == [1.5, 1.8]


def test_intraday_naive_times_are_exchange_local_and_labelled_by_start(
    tmp_path: Path, cli: Callable[..., Result], lake_root: Path
) -> None:
    csv = "Datetime,Open,High,Low,Close,Volume\n2014-11-26 09:30:00,1,1,1,1,1\n2014-11-26 15:59:00,1,1,1,1,1\n"
    path = write_text(tmp_path / "AAA.csv", csv)
    assert cli("data", "ingest", "csv", str(path), "--dataset", "m", "--freq", "1m").exit_code == 0
    ts = Lake(lake_root).read("bars", "m", freq="1m")["ts"].to_list()
    assert ts == [datetime(2014, 11, 26, 14, 31, tzinfo=UTC), datetime(2014, 11, 26, 21, 0, tzinfo=UTC)]
    bad = write_text(tmp_path / "BBB.csv", csv.replace("09:30", "08:00"))
    result = cli("data", "ingest", "csv", str(bad), "--dataset", "m", "--freq", "1m")
    assert result.exit_code != 0 and "outside every XNYS session" in result.output and "row 1" in result.output


def test_parquet_folder_and_idempotent_reingest(tmp_path: Path, cli: Callable[..., Result], lake_root: Path) -> None:
    frame = pl.read_csv(io.StringIO(GOOD_BARS))
    (tmp_path / "pq").mkdir()
    for symbol in ("AAA", "BBB"):
        frame.write_parquet(tmp_path / "pq" / f"{symbol}.parquet")
    assert cli("data", "ingest", "parquet", str(tmp_path / "pq"), "--dataset", "p").exit_code == 0
    before = snapshot(lake_root / "kind=bars")
    again = cli("data", "ingest", "parquet", str(tmp_path / "pq"), "--dataset", "p")
    assert again.exit_code == 0 and "0 new" in again.output
    assert snapshot(lake_root / "kind=bars") == before
    assert Lake(lake_root).read("bars", "p", freq="1d")["symbol"].unique().sort().to_list() == ["AAA", "BBB"]


def test_text_csv_with_symbol_lists(tmp_path: Path, cli: Callable[..., Result], lake_root: Path) -> None:
    csv = (
        "date,headline,content,tickers\n"
        '2014-11-26T15:00:00Z,Up,"AAA beats, raises",AAA;BBB\n'
        "2014-11-26 23:00:00,Down,,CCC\n"
    )
    path = write_text(tmp_path / "news.csv", csv)
    result = cli("data", "ingest", "csv", str(path), "--kind", "text", "--dataset", "news", "--symbol-separator", ";")
    assert result.exit_code == 0, result.output
    texts = Lake(lake_root).read("text", "news")
    assert texts["symbols"].to_list() == [["AAA", "BBB"], ["CCC"]]
    assert texts["published_at"].to_list() == [
        datetime(2014, 11, 26, 15, tzinfo=UTC),
        datetime(2014, 11, 26, 23, tzinfo=UTC),
    ]
    assert texts["id"].n_unique() == 2 and texts["id"].str.len_chars().to_list() == [32, 32]


def make_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return path


def test_archive_with_manifest_unpacks_reproducibly(
    tmp_path: Path, cli: Callable[..., Result], lake_root: Path
) -> None:
    archive = make_zip(tmp_path / "dump.zip", {"dump/AAA.csv": GOOD_BARS, "dump/BBB.csv": GOOD_BARS})
    manifest = write_text(tmp_path / "SHA256SUMS", f"{sha256_file(archive)}  dump.zip\n")
    result = cli("data", "ingest", "archive", str(archive), "--manifest", str(manifest))
    assert result.exit_code == 0, result.output
    assert not (lake_root / "_staging").exists()  # each ingest unpacks into a folder of its own, removed after
    assert Lake(lake_root).read("bars", "dump", freq="1d").height == 8
    assert cli("data", "ingest", "archive", str(archive), "--sha256", sha256_file(archive)).exit_code == 0


def news_price_frame() -> pl.DataFrame:
    row = {"date": "2014-11-26", "stock": "AAA", "title": "AAA up", "content": "body", "trading_date": "2014-11-26",
           "exact_trading_date": "2014-11-26"}  # fmt: skip
    prices = {f"ts_{k}": 100.0 + k for k in range(-3, 3)}
    second = {**row, "date": "2014-11-28", "title": "AAA again", "trading_date": "2014-11-28"}
    second_prices = {f"ts_{k}": 101.0 + k for k in range(-3, 3)}  # 2014-11-28 is ts_1 above: 101 in both
    second_prices["ts_-1"] = 99.5  # disagrees with the first item about 2014-11-26 (100.0)
    return pl.DataFrame([{**row, **prices}, {**second, **second_prices}])


def test_news_price_schema_stores_close_only_and_counts_conflicts(tmp_path: Path, lake_root: Path) -> None:
    folder = tmp_path / "np"
    folder.mkdir()
    news_price_frame().write_parquet(folder / "train.parquet")
    bars_report, text_report = ingest_news_price(Lake(lake_root), folder, "np")
    bars = Lake(lake_root).read("bars", "np", freq="1d")
    assert bars["open"].is_null().all() and bars["volume"].is_null().all()
    assert bars_report.counts["conflicting_closes_latest_kept"] == 1
    assert bars.filter(pl.col("ts") == datetime(2014, 11, 26, 21, tzinfo=UTC))["close"].to_list() == [99.5]
    assert Lake(lake_root).metadata("bars", "np")["fields"] == ["close"]
    texts = Lake(lake_root).read("text", "np")
    assert texts["published_at"][0] == datetime(2014, 11, 27, 4, 59, 59, 999999, tzinfo=UTC)  # end of day, New York
    assert text_report.rows_written == 2


def test_news_price_download_through_datasets_from_a_local_folder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    news_price_frame().write_parquet(repo / "train.parquet")
    out = download_news_price(tmp_path / "out", str(repo))
    assert pl.read_parquet(out / "train.parquet").height == 2
    with pytest.raises(DownloadError):
        download_news_price(tmp_path / "out2", str(tmp_path / "no-such-repo"))


def test_download_checks_digests_before_ingesting(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    url, www = http_folder
    make_zip(www / "prices.zip", {"repo-abc/prices/AAA.csv": GOOD_BARS})
    reference = tmp_path / "ref" / "prices"
    write_text(reference / "AAA.csv", GOOD_BARS)
    seen: list[str] = []

    def record(lake: Lake, root: Path, name: str) -> list:
        seen.append((root / "prices" / "AAA.csv").read_text())
        return []

    good = RemoteDataset("tiny", f"{url}/prices.zip", {"prices": tree_digest(reference)}, ingest=record)
    lake = Lake(tmp_path / "lake")
    download(lake, good)
    assert seen == [GOOD_BARS]
    assert not (lake.root / "_staging").exists()  # the unpacked copy is removed once ingested
    bad = RemoteDataset("tiny2", f"{url}/prices.zip", {"prices": "0" * 64}, ingest=record)
    with pytest.raises(DownloadError, match="does not match its published digest"):
        download(lake, bad)
    assert len(seen) == 1
    with pytest.raises(DownloadError, match="could not download"):
        download(lake, RemoteDataset("gone", f"{url}/missing.zip", {}))
