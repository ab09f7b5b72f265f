"""Ingest by mapping alone, part 3: local timestamps with month names and a zone abbreviation (`--date-format ...%Z
--timezone ZONE`: the abbreviation is checked against the zone, never guessed) and a label column for bars
(`--map Label=label`: -1, 0 or 1, stored as given). Bad rows are refused with one line naming file, row, field and
the user's text, and the lake is left byte-identical; with --rejects they are set aside."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import Result

from finfusion.data.calendar import get_calendar
from finfusion.data.catalog import Catalog
from finfusion.data.lake import Lake
from finfusion.data.resample import resample_bars
from finfusion.data.schema import BARS
from tests.conftest import GOOD_BARS, snapshot, write_text

Cli = Callable[..., Result]

NEWS_FORMAT = "%b %d, %Y %I:%M %p %Z"
NEW_YORK = ("--timezone", "America/New_York")
#: Summer (EDT, UTC-4), winter (EST, UTC-5), and the hour repeated on 2022-11-06, once in EDT and once in EST.
SCRAPED_NEWS = """time,headline
"Jun 3, 2022 4:05 PM EDT",Summer
"Jan 3, 2022 4:05 PM EST",Winter
"Nov 6, 2022 1:30 AM EDT",Before the clocks go back
"Nov 6, 2022 1:30 AM EST",After the clocks go back
"""
EXPECTED_UTC = {
    "Summer": datetime(2022, 6, 3, 20, 5, tzinfo=UTC),
    "Winter": datetime(2022, 1, 3, 21, 5, tzinfo=UTC),
    "Before the clocks go back": datetime(2022, 11, 6, 5, 30, tzinfo=UTC),
    "After the clocks go back": datetime(2022, 11, 6, 6, 30, tzinfo=UTC),
}
LABELLED_BARS = """Date,Open,High,Low,Close,Volume,Label
2014-11-24,10.0,10.5,9.8,10.2,1000,1
2014-11-25,10.2,10.6,10.0,10.4,1200,-1
2014-11-26,10.4,10.9,10.3,10.8,900,0
2014-11-28,10.8,11.0,10.7,10.9,400,1
"""


def news(*lines: str) -> str:
    return "time,headline\n" + "".join(f'"{line}",Headline {i}\n' for i, line in enumerate(lines, start=1))


def ingest_news(cli: Cli, path: Path, *args: str) -> Result:
    return cli("data", "ingest", "csv", str(path), "--kind", "text", "--dataset", "news", "--date-format",
               NEWS_FORMAT, *args)  # fmt: skip


def assert_refused(result: Result, lake_root: Path, before: dict[str, bytes], *, row: int | None, says: str) -> None:
    """Non-zero exit, one line naming the row (when given) and the field `time` with `says`, the lake unchanged."""
    message = (result.stderr or result.output).strip()
    assert result.exit_code != 0, result.output
    assert len(message.splitlines()) == 1, message
    if row is not None:
        assert re.search(rf"\brow {row}\b", message) and "field 'time'" in message, message
    assert says in message, message
    assert snapshot(lake_root) == before, "a refused input changed the lake"


@pytest.fixture
def seeded(tmp_path: Path, cli: Cli, lake_root: Path) -> dict[str, bytes]:
    """A lake holding bars and texts already; returns its snapshot."""
    assert cli("data", "ingest", "csv", str(write_text(tmp_path / "AAA.csv", GOOD_BARS)), "--dataset", "news")\
        .exit_code == 0  # fmt: skip
    first = write_text(tmp_path / "first.csv", news("Jan 3, 2022 9:00 AM EST"))
    assert ingest_news(cli, first, *NEW_YORK).exit_code == 0
    return snapshot(lake_root)


# ------------------------------------------------------------------------------------------------ zone abbreviations


def test_month_names_and_abbreviations_become_their_utc_instants(tmp_path: Path, lake_root: Path, cli: Cli) -> None:
    taken = ingest_news(cli, write_text(tmp_path / "scraped.csv", SCRAPED_NEWS), *NEW_YORK)
    assert taken.exit_code == 0, taken.output
    texts = Lake(lake_root).read("text", "news")
    assert dict(zip(texts["title"].to_list(), texts["published_at"].to_list(), strict=True)) == EXPECTED_UTC


def test_abbreviated_bar_times_are_read_in_the_zone_too(tmp_path: Path, lake_root: Path, cli: Cli) -> None:
    rows = ("03-Jan-2022 09:30 EST,10,11,9,10.5,100", "03-Jun-2022 09:30 EDT,10,11,9,10.5,100")
    bars = "Time,Open,High,Low,Close,Volume\n" + "".join(row + "\n" for row in rows)
    source = write_text(tmp_path / "AAA.csv", bars)
    taken = cli("data", "ingest", "csv", str(source), "--dataset", "intraday", "--freq", "5m", "--date-format",
                "%d-%b-%Y %H:%M %Z", *NEW_YORK)  # fmt: skip
    assert taken.exit_code == 0, taken.output
    ends = Lake(lake_root).read("bars", "intraday", freq="5m")["ts"].to_list()  # labelled by start: end = +5 minutes
    assert ends == [datetime(2022, 1, 3, 14, 35, tzinfo=UTC), datetime(2022, 6, 3, 13, 35, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("Jun 3, 2022 4:05 PM EST", "'Jun 3, 2022 4:05 PM EST': EST is not in force in America/New_York at that "
         "local time (EDT is)"),
        ("Jun 3, 2022 4:05 PM CST", "its time zone abbreviation is not one America/New_York uses"),
        ("Mar 13, 2022 2:30 AM EDT", "local time 'Mar 13, 2022 2:30 AM EDT' does not exist in America/New_York"),
        ("June third, 4 PM", "does not match the date format"),
    ],
)  # fmt: skip
def test_a_wrong_abbreviation_or_an_impossible_local_time_is_refused(
    tmp_path: Path, lake_root: Path, cli: Cli, seeded: dict[str, bytes], line: str, says: str
) -> None:
    source = write_text(tmp_path / "bad.csv", news("Jan 4, 2022 9:00 AM EST", line))
    assert_refused(ingest_news(cli, source, *NEW_YORK), lake_root, seeded, row=2, says=says)


def test_an_abbreviation_without_a_zone_is_refused_for_texts_and_bars(
    tmp_path: Path, lake_root: Path, cli: Cli, seeded: dict[str, bytes]
) -> None:
    source = write_text(tmp_path / "bad.csv", news("Jan 4, 2022 9:00 AM EST"))
    assert_refused(ingest_news(cli, source), lake_root, seeded, row=None, says="give --timezone")
    bars = write_text(tmp_path / "AAA.csv", "Time,Open,High,Low,Close,Volume\n03-Jun-2022 09:30 EDT,10,11,9,10,5\n")
    refused = cli("data", "ingest", "csv", str(bars), "--dataset", "news", "--freq", "5m", "--date-format",
                  "%d-%b-%Y %H:%M %Z", "--rejects", str(tmp_path / "rejects.csv"))  # fmt: skip
    assert_refused(refused, lake_root, seeded, row=None, says="give --timezone")


def test_a_repeated_local_time_without_abbreviation_is_refused(
    tmp_path: Path, lake_root: Path, cli: Cli, seeded: dict[str, bytes]
) -> None:
    source = write_text(tmp_path / "bad.csv", "time,headline\n2022-11-06 01:30,Which one?\n")
    refused = cli("data", "ingest", "csv", str(source), "--kind", "text", "--dataset", "news", *NEW_YORK)
    assert_refused(refused, lake_root, seeded, row=1, says="local time '2022-11-06 01:30' occurs twice")


def test_rejects_sets_a_bad_abbreviation_aside_and_ingests_the_rest(tmp_path: Path, lake_root: Path, cli: Cli) -> None:
    source = write_text(tmp_path / "scraped.csv", SCRAPED_NEWS + '"Jun 4, 2022 4:05 PM EST",Wrong zone\n')
    rejects = tmp_path / "rejects.csv"
    taken = ingest_news(cli, source, *NEW_YORK, "--rejects", str(rejects))
    assert taken.exit_code == 0, taken.output
    assert sorted(Lake(lake_root).read("text", "news")["title"].to_list()) == sorted(EXPECTED_UTC)
    rows = pl.read_csv(rejects)
    assert rows["row"].to_list() == [5] and rows["field"].to_list() == ["time"]
    assert "'Jun 4, 2022 4:05 PM EST': EST is not in force" in rows["reason"][0]


# ---------------------------------------------------------------------------------------------------------- labels


def ingest_labels(cli: Cli, path: Path, *args: str) -> Result:
    return cli("data", "ingest", "csv", str(path), "--dataset", "labelled", "--map", "Label=label", *args)


def test_a_label_column_round_trips_and_an_empty_cell_keeps_the_stored_label(
    tmp_path: Path, lake_root: Path, cli: Cli
) -> None:
    source = write_text(tmp_path / "AAA.csv", LABELLED_BARS)
    taken = ingest_labels(cli, source)
    assert taken.exit_code == 0, taken.output
    bars = Lake(lake_root).read("bars", "labelled")
    assert bars.schema["label"] == pl.Int64 and bars["label"].to_list() == [1, -1, 0, 1]
    before = snapshot(lake_root)
    emptied = write_text(tmp_path / "again" / "AAA.csv", LABELLED_BARS.replace(",-1\n", ",\n"))
    again = ingest_labels(cli, emptied)
    assert again.exit_code == 0, again.output
    assert snapshot(lake_root) == before  # nothing changed: the stored -1 is kept
    changed = ingest_labels(cli, write_text(tmp_path / "changed" / "AAA.csv", LABELLED_BARS.replace(",-1\n", ",0\n")))
    assert changed.exit_code != 0 and "label -1 -> 0" in changed.output and snapshot(lake_root) == before


@pytest.mark.parametrize(
    ("value", "says"),
    [("up", "label 'up' is not an integer"), ("1.5", "label '1.5' is not an integer"),
     ("2", "label '2' must be -1, 0 or 1")],
)  # fmt: skip
def test_a_label_that_is_not_minus_one_zero_or_one_is_refused(
    tmp_path: Path, lake_root: Path, cli: Cli, value: str, says: str
) -> None:
    assert ingest_labels(cli, write_text(tmp_path / "good" / "AAA.csv", LABELLED_BARS)).exit_code == 0
    before = snapshot(lake_root)
    source = write_text(tmp_path / "AAA.csv", LABELLED_BARS.replace("900,0\n", f"900,{value}\n"))
    refused = ingest_labels(cli, source)
    message = refused.stderr or refused.output
    assert refused.exit_code != 0 and f"{source}, row 3, field 'Label': {says}" in message, message
    assert snapshot(lake_root) == before


def test_files_written_before_the_label_column_are_read_and_kept(tmp_path: Path, lake_root: Path, cli: Cli) -> None:
    old = write_text(tmp_path / "old" / "OLD.csv", GOOD_BARS)
    assert cli("data", "ingest", "csv", str(old), "--dataset", "labelled").exit_code == 0
    for path in lake_root.rglob("*.parquet"):  # as an older version wrote them: no label column
        pl.read_parquet(path).drop("label").write_parquet(path)
    before = snapshot(lake_root)
    assert cli("data", "ingest", "csv", str(old), "--dataset", "labelled").exit_code == 0
    assert snapshot(lake_root) == before  # the same input commits nothing
    only_old = Catalog(Lake(lake_root)).bars_asof("labelled", datetime(2015, 1, 1, tzinfo=UTC))
    assert only_old.schema["label"] == pl.Int64 and only_old["label"].null_count() == only_old.height == 4
    assert ingest_labels(cli, write_text(tmp_path / "AAA.csv", LABELLED_BARS)).exit_code == 0
    lake = Lake(lake_root)
    for bars in (
        lake.read("bars", "labelled"),
        lake.scan("bars", "labelled").collect(),
        Catalog(lake).bars_asof("labelled", datetime(2015, 1, 1, tzinfo=UTC)),
    ):
        assert set(bars.columns) == set(BARS.names)
        labels = dict(bars.group_by("symbol").agg(pl.col("label").drop_nulls()).iter_rows())
        assert labels == {"OLD": [], "AAA": [1, -1, 0, 1]}


def test_resampled_bars_carry_no_label() -> None:
    ends = [datetime(2014, 11, 24, 14, 31, tzinfo=UTC), datetime(2014, 11, 24, 14, 32, tzinfo=UTC)]
    bars = pl.DataFrame({"symbol": ["AAA", "AAA"], "ts": ends, "close": [10.0, 10.5], "label": [1, -1]})
    coarse = resample_bars(bars, get_calendar("XNYS"), "5m", from_freq="1m")
    assert coarse.height == 1 and coarse.schema["label"] == pl.Int64 and coarse["label"].to_list() == [None]
