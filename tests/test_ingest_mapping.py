"""Ingest by mapping alone: symbols named the same way whatever the files' case (`--symbol-case`), and one symbol
for input without a symbol column (`--symbol`), for bars and texts alike; ambiguous uses are refused with the lake
left as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
from typer.testing import Result

from finfusion.data.lake import Lake
from tests.conftest import GOOD_BARS, snapshot, write_text

NEWS = """published_at,ticker,headline
2014-11-24T13:00:00Z,aapl,Apple beats estimates
2014-11-25T13:00:00Z,msft,Microsoft guidance
"""
UNTAGGED_NEWS = """published_at,headline
2014-11-24T13:00:00Z,Apple beats estimates
"""


def test_lower_case_file_names_and_tickers_fold_to_one_symbol(
    tmp_path: Path, lake_root: Path, cli: Callable[..., Result]
) -> None:
    write_text(tmp_path / "prices" / "aapl.csv", GOOD_BARS)
    write_text(tmp_path / "news.csv", NEWS)
    bars = cli("data", "ingest", "csv", str(tmp_path / "prices"), "--dataset", "mine", "--symbol-case", "upper")
    assert bars.exit_code == 0, bars.output
    texts = cli("data", "ingest", "csv", str(tmp_path / "news.csv"), "--kind", "text", "--dataset", "mine",
                "--symbol-case", "upper")  # fmt: skip
    assert texts.exit_code == 0, texts.output
    lake = Lake(lake_root)
    assert lake.read("bars", "mine")["symbol"].unique().to_list() == ["AAPL"]
    assert sorted(s for symbols in lake.read("text", "mine")["symbols"].to_list() for s in symbols) == ["AAPL", "MSFT"]


def test_one_symbol_for_input_without_a_symbol_column(
    tmp_path: Path, lake_root: Path, cli: Callable[..., Result]
) -> None:
    write_text(tmp_path / "download.csv", GOOD_BARS)
    write_text(tmp_path / "apple_news.csv", UNTAGGED_NEWS)
    bars = cli("data", "ingest", "csv", str(tmp_path / "download.csv"), "--dataset", "mine", "--symbol", "AAPL")
    assert bars.exit_code == 0, bars.output
    texts = cli("data", "ingest", "csv", str(tmp_path / "apple_news.csv"), "--kind", "text", "--dataset", "mine",
                "--symbol", "AAPL")  # fmt: skip
    assert texts.exit_code == 0, texts.output
    lake = Lake(lake_root)
    assert lake.read("bars", "mine")["symbol"].unique().to_list() == ["AAPL"]
    assert lake.read("text", "mine")["symbols"].to_list() == [["AAPL"]]


def test_a_symbol_given_for_a_file_with_its_own_symbols_is_refused(
    tmp_path: Path, lake_root: Path, cli: Callable[..., Result]
) -> None:
    write_text(tmp_path / "news.csv", NEWS)
    write_text(tmp_path / "AAPL.csv", GOOD_BARS)
    assert cli("data", "ingest", "csv", str(tmp_path / "AAPL.csv"), "--dataset", "mine").exit_code == 0
    before = snapshot(lake_root)
    refused = cli("data", "ingest", "csv", str(tmp_path / "news.csv"), "--kind", "text", "--dataset", "mine",
                  "--symbol", "AAPL")  # fmt: skip
    assert refused.exit_code != 0
    assert "--symbol AAPL given but the file has a symbol column of its own" in refused.output
    assert "news.csv" in refused.output
    assert snapshot(lake_root) == before
    empty = cli("data", "ingest", "csv", str(tmp_path / "AAPL.csv"), "--dataset", "mine", "--symbol", " ")
    assert empty.exit_code != 0 and "--symbol: an empty symbol" in empty.output
    assert snapshot(lake_root) == before


SCRAPED = """Date,Open,High,Low,Close,Adj Close,Volume
2014-11-24,10.0,10.5,9.8,10.2,10.2,1000
2014-11-25,10.2,10.6,10.0,10.4,10.4,1200
3 hours ago,10.4,10.9,10.3,10.8,10.8,900
2014-11-28,10.8,11.0,10.7,10.9,10.9,400
2014-12-01,10.9,11.2,10.8,-11.0,11.0,500
"""


def test_rejects_mode_sets_bad_rows_aside_with_their_reasons_and_ingests_the_rest(
    tmp_path: Path, lake_root: Path, cli: Callable[..., Result]
) -> None:
    good = write_text(tmp_path / "good" / "MSFT.csv", GOOD_BARS)
    assert cli("data", "ingest", "csv", str(good), "--dataset", "mine").exit_code == 0
    before = snapshot(lake_root)
    source = write_text(tmp_path / "AAPL.csv", SCRAPED)
    refused = cli("data", "ingest", "csv", str(source), "--dataset", "mine")  # the default: all or nothing
    assert refused.exit_code != 0 and "row 5, field 'Close'" in refused.output and snapshot(lake_root) == before
    rejects = tmp_path / "rejects.csv"
    taken = cli("data", "ingest", "csv", str(source), "--dataset", "mine", "--rejects", str(rejects))
    assert taken.exit_code == 0, taken.output
    assert "2 rejected rows with their reasons" in taken.output
    assert Lake(lake_root).read("bars", "mine").filter(pl.col("symbol") == "AAPL").height == 3
    rows = pl.read_csv(rejects)
    assert rows["row"].to_list() == [3, 5] and rows["file"].to_list() == [str(source)] * 2
    assert "3 hours ago" in rows["reason"][0] and rows["field"].to_list()[1] == "Close"
    other = cli("data", "ingest", "kdd17", str(tmp_path), "--rejects", str(rejects))
    assert other.exit_code != 0 and "--rejects applies to csv, parquet and archive input, not kdd17" in other.output


WIDE_NEWS = "\n".join(
    [
        "Date,Label,Top1,Top2,Top3",
        '2016-06-30,1,b\'Markets rally on rate hopes\',"b""Oil slides, again""",',
        "2016-07-01,0,Bank earnings beat,,b'Storm hits the coast'",
        "",
    ]
)


def test_a_wide_headline_table_becomes_one_text_per_cell_with_its_rank(
    tmp_path: Path, lake_root: Path, cli: Callable[..., Result]
) -> None:
    source = write_text(tmp_path / "combined_news.csv", WIDE_NEWS)
    taken = cli("data", "ingest", "csv", str(source), "--kind", "text", "--dataset", "djia", "--wide-texts", "Top*")
    assert taken.exit_code == 0, taken.output
    texts = Lake(lake_root).read("text", "djia").sort("published_at", "source_ref")
    assert texts["title"].to_list() == [
        "Markets rally on rate hopes", "Oil slides, again", "Bank earnings beat", "Storm hits the coast",
    ]  # fmt: skip
    assert texts["source_ref"].to_list() == ["Top1", "Top2", "Top1", "Top3"]
    assert texts["symbols"].to_list() == [[]] * 4  # market-wide: no symbol
    before = snapshot(lake_root)
    none = cli("data", "ingest", "csv", str(source), "--kind", "text", "--dataset", "djia", "--wide-texts", "Head*")
    assert none.exit_code != 0 and "--wide-texts Head* matches none of the columns" in none.output
    bars = cli("data", "ingest", "csv", str(source), "--dataset", "djia", "--wide-texts", "Top*")
    assert bars.exit_code != 0 and "it needs --kind text" in bars.output
    assert snapshot(lake_root) == before
