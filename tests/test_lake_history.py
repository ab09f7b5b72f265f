"""What the lake refuses (ambiguous dates, future rows, prices outside the bar, silent changes of history) and how
history is kept: every commit logged, a dataset's previous version restorable, deletes undoable."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from typer.testing import Result

from finfusion.data.lake import Lake
from tests.conftest import GOOD_BARS, snapshot, write_text

Cli = Callable[..., Result]
HEADER, *LINES = GOOD_BARS.strip().splitlines()


def bars_csv(*lines: str, header: str = HEADER) -> str:
    return "\n".join([header, *lines]) + "\n"


def ingest(cli: Cli, path: Path, *args: str) -> Result:
    return cli("data", "ingest", "csv", str(path), "--dataset", "prices", *args)


def message(result: Result) -> str:
    return result.stderr or result.output


@pytest.fixture
def seeded(tmp_path: Path, cli: Cli, lake_root: Path) -> dict[str, bytes]:
    result = ingest(cli, write_text(tmp_path / "good" / "AAA.csv", GOOD_BARS))
    assert result.exit_code == 0, result.output
    return snapshot(lake_root)


def refused(result: Result, lake_root: Path, before: dict[str, bytes], *fragments: str) -> str:
    text = message(result)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in text
    assert snapshot(lake_root) == before, "a refused input changed the lake"
    for fragment in fragments:
        assert fragment in text, text
    return text


def stored_closes(lake_root: Path) -> dict[date, float]:
    frame = Lake(lake_root).read("bars", "prices", freq="1d")
    return dict(zip(frame["ts"].dt.convert_time_zone("America/New_York").dt.date(), frame["close"], strict=True))


# ------------------------------------------------------------------------------------------- ambiguous and impossible


def test_day_first_dates_that_could_be_month_first_need_a_date_format(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    # 1 and 2 October 2012 written day-first: every day is <= 12, so 01/10/2012 could be 10 January.
    path = write_text(
        tmp_path / "in" / "BBB.csv",
        bars_csv("01/10/2012,10,11,9,10,10,100", "02/10/2012,10,11,9,10,10,100"),
    )
    text = refused(ingest(cli, path), lake_root, seeded, "BBB.csv", "'01/10/2012'", "--date-format", "field 'Date'")
    assert re.search(r"\brow 1\b", text)
    assert ingest(cli, path, "--date-format", "%d/%m/%Y").exit_code == 0
    days = Lake(lake_root).read("bars", "prices", freq="1d", symbols=["BBB"])["ts"]
    assert days.dt.convert_time_zone("America/New_York").dt.date().to_list() == [date(2012, 10, 1), date(2012, 10, 2)]


def test_month_first_dates_with_a_day_above_12_are_read_without_a_format(
    tmp_path: Path, cli: Cli, lake_root: Path
) -> None:
    path = write_text(tmp_path / "CCC.csv", bars_csv("10/01/2012,10,11,9,10,10,100", "10/15/2012,10,11,9,10,10,1"))
    assert ingest(cli, path).exit_code == 0
    days = Lake(lake_root).read("bars", "prices", freq="1d")["ts"].dt.convert_time_zone("America/New_York").dt.date()
    assert days.to_list() == [date(2012, 10, 1), date(2012, 10, 15)]


def test_midnight_with_an_offset_is_that_days_session(tmp_path: Path, cli: Cli, lake_root: Path) -> None:
    # 2022-06-03 and 2022-06-06 (a Friday and a Monday) at midnight UTC: never moved to the previous New York day.
    path = write_text(
        tmp_path / "DDD.csv",
        bars_csv("2022-06-03 00:00:00+00:00,10,11,9,10,10,100", "2022-06-06T00:00:00Z,10,11,9,10.5,10.5,100"),
    )
    assert ingest(cli, path).exit_code == 0, message(ingest(cli, path))
    assert list(stored_closes(lake_root)) == [date(2022, 6, 3), date(2022, 6, 6)]


@pytest.mark.parametrize("kind", ["bars", "text"])
def test_rows_dated_in_the_future_are_refused_unless_allowed(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes], kind: str
) -> None:
    if kind == "bars":
        path = write_text(tmp_path / "in" / "EEE.csv", bars_csv(LINES[0], "2100-06-01,10,11,9,10,10,100"))
        args: tuple[str, ...] = ()
    else:
        path = write_text(tmp_path / "news.csv", "Date,Headline\n2014-11-24 10:00,Up\n2100-01-04 10:00,Later\n")
        args = ("--kind", "text")
    text = refused(ingest(cli, path, *args), lake_root, seeded, "in the future", "--allow-future", "'2100-")
    assert re.search(r"\brow 2\b", text)
    assert ingest(cli, path, *args, "--allow-future").exit_code == 0


def test_close_above_high_is_an_error_and_repair_clips_and_counts(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    path = write_text(tmp_path / "in" / "AAA.csv", bars_csv(*LINES[:2], "2014-11-26,10.4,10.9,10.3,11.5,11.5,900"))
    text = refused(ingest(cli, path), lake_root, seeded, "AAA.csv", "field 'Close'", "11.5", "[low, high]")
    assert re.search(r"\brow 3\b", text)
    result = ingest(cli, path, "--repair", "--update")
    assert result.exit_code == 0, message(result)
    assert re.search(r"prices clipped into low high\s*│\s*1\b", result.output), result.output
    assert stored_closes(lake_root)[date(2014, 11, 26)] == 10.9


def test_a_missing_value_never_replaces_a_stored_one(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    before = Lake(lake_root).read("bars", "prices", freq="1d")
    path = write_text(tmp_path / "in" / "AAA.csv", bars_csv(*LINES[:2], "2014-11-26,10.4,10.9,10.3,10.8,,900"))
    result = ingest(cli, path)
    assert result.exit_code == 0, message(result)
    assert re.search(r"stored values kept where the input had none\s*│\s*\d", result.output), result.output
    assert Lake(lake_root).read("bars", "prices", freq="1d").equals(before)
    assert snapshot(lake_root) == seeded  # nothing changed, so nothing was committed


def test_unmapped_columns_are_listed_in_the_summary(tmp_path: Path, cli: Cli, lake_root: Path) -> None:
    path = write_text(
        tmp_path / "AAA.csv", bars_csv(*(f"{line},up,0.7" for line in LINES), header=HEADER + ",Label,Score")
    )
    result = ingest(cli, path)
    assert result.exit_code == 0, message(result)
    assert "columns not stored" in result.output and "'Label', 'Score'" in result.output


# ---------------------------------------------------------------------------------------------- history is explicit


def test_changed_values_are_refused_without_update_and_kept_in_history(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    changed = [line.replace("10.4,10.4,1200", "10.45,10.45,1200") for line in LINES]
    path = write_text(tmp_path / "in" / "AAA.csv", bars_csv(*changed))
    refused(ingest(cli, path), lake_root, seeded, "1 stored bars rows", "symbol AAA", "close 10.4 -> 10.45", "--update")
    assert ingest(cli, path, "--update").exit_code == 0
    assert stored_closes(lake_root)[date(2014, 11, 25)] == 10.45
    history = cli("data", "history", "prices")
    assert history.exit_code == 0 and re.search(r"│\s*2\s*│.*write.*│\s*0\s*│\s*1\s*│\s*3\s*│", history.output), (
        history.output
    )
    back = cli("data", "rollback", "prices")
    assert back.exit_code == 0 and "restored as of version 1" in back.output
    assert stored_closes(lake_root)[date(2014, 11, 25)] == 10.4


def test_delete_removes_a_dataset_and_rollback_brings_it_back(
    cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    before = Lake(lake_root).read("bars", "prices", freq="1d")
    assert cli("data", "delete", "prices").exit_code == 0
    assert Lake(lake_root).datasets() == []
    listed = cli("data", "list")
    assert listed.exit_code == 0 and "prices" not in listed.output
    assert cli("data", "rollback", "prices", "--freq", "1d").exit_code == 0
    assert Lake(lake_root).read("bars", "prices", freq="1d").equals(before)


def test_uncommitted_files_are_invisible_and_swept_by_the_next_writer(
    cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    table = lake_root / "kind=bars" / "dataset=prices" / "freq=1d"
    stray = [
        table / "symbol=ZZZ" / "part-00000002.parquet",  # a partition a killed ingest never committed
        table / "symbol=AAA" / ".part-00000002.parquet.1234.tmp",  # a temporary write
        lake_root / "_log" / "00000002.json",  # a commit record written just before the kill
        lake_root / "_staging" / f"999999999-{socket.gethostname()}-00" / "AAA.csv",  # of a process that is gone
    ]
    for path in stray:
        write_text(path, "not parquet")
    listed = cli("data", "list")
    assert listed.exit_code == 0 and "ZZZ" not in listed.output
    assert Lake(lake_root).read("bars", "prices", freq="1d")["symbol"].unique().to_list() == ["AAA"]
    with Lake(lake_root).transaction():
        pass
    assert snapshot(lake_root) == seeded


def test_each_write_logs_who_and_counts(lake_root: Path, cli: Cli, seeded: dict[str, bytes]) -> None:
    entry = Lake(lake_root).history("bars", "prices", "1d")[-1]
    assert entry["version"] == 1 and entry["user"] and entry["time"]
    assert entry["change"]["counts"] == {
        "rows": 4, "new_rows": 4, "updated_rows": 0, "unchanged_rows": 0, "kept_values": 0,
    }  # fmt: skip
    assert pl.read_parquet(next(lake_root.rglob("part-00000001.parquet"))).height == 4


def test_vacuum_keeps_the_latest_versions_restorable_and_frees_older_files(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    for close in ("10.45", "10.5"):
        changed = [line.replace("10.4,10.4,1200", f"{close},{close},1200") for line in LINES]
        assert ingest(cli, write_text(tmp_path / "in" / "AAA.csv", bars_csv(*changed)), "--update").exit_code == 0
    assert len(list(lake_root.rglob("part-*.parquet"))) == 3
    result = cli("data", "vacuum", "--keep", "2")
    assert result.exit_code == 0 and "removed 1 files" in result.output
    assert cli("data", "rollback", "prices", "--version", "2").exit_code == 0  # version 2 was kept
    assert stored_closes(lake_root)[date(2014, 11, 25)] == 10.45
    gone = cli("data", "rollback", "prices", "--version", "1")
    assert gone.exit_code != 0 and "removed by vacuum" in message(gone)
