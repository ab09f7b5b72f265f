"""Point-in-time series in the lake: revisions kept beside first releases, reads as of an instant, and every malformed
or impossible row refused with one line naming file, row and field, the lake left byte-identical."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import Result

from finfusion.data.catalog import Catalog
from finfusion.data.lake import Lake
from finfusion.data.series import as_of
from tests.conftest import snapshot, write_text

#: US GDP growth for 2024Q1 released 2024-04-25 and revised 2024-05-30; Q2 released 2024-07-25.
GDP = """date,release,value
2024-01-01,2024-04-25 12:30:00,1.6
2024-01-01,2024-05-30 12:30:00,1.3
2024-04-01,2024-07-25 12:30:00,2.8
"""


def ingest(cli: Callable[..., Result], path: Path, *extra: str) -> Result:
    return cli("data", "ingest", "csv", str(path), "--kind", "series", "--dataset", "macro", "--series", "GDP",
               "--map", "release=published_at", *extra)  # fmt: skip


def test_a_revised_value_reads_as_the_vintage_known_at_the_instant(
    cli: Callable[..., Result], lake_root: Path, tmp_path: Path
) -> None:
    path = write_text(tmp_path / "gdp.csv", GDP)
    result = ingest(cli, path)
    assert result.exit_code == 0, result.output
    rows = Lake(lake_root).read("series", "macro")
    assert rows.height == 3 and rows["series"].unique().to_list() == ["GDP"]

    def value(at: datetime, period: datetime) -> float | None:
        known = as_of(rows, at).filter(pl.col("period") == period)
        return known["value"].item() if known.height else None

    q1, q2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
    assert value(datetime(2024, 4, 25, 12, 29, tzinfo=UTC), q1) is None  # a minute before the release
    assert value(datetime(2024, 4, 25, 12, 30, tzinfo=UTC), q1) == 1.6
    assert value(datetime(2024, 5, 30, 12, 29, tzinfo=UTC), q1) == 1.6  # the revision is not known yet
    assert value(datetime(2024, 6, 1, tzinfo=UTC), q1) == 1.3
    assert value(datetime(2024, 6, 1, tzinfo=UTC), q2) is None
    assert value(datetime(2024, 8, 1, tzinfo=UTC), q2) == 2.8
    listed = Catalog(Lake(lake_root)).datasets().filter(pl.col("kind") == "series")
    assert listed["symbols"].to_list() == [1] and listed["rows"].to_list() == [3]  # one series, three releases
    before = snapshot(lake_root)
    again = ingest(cli, path)
    assert again.exit_code == 0 and snapshot(lake_root) == before  # the same file again changes nothing


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("date,release,value\n2024-01-01,2023-12-30 08:00:00,1.6\n",
         "row 1, field 'release': release '2023-12-30 08:00:00' is before the start of the period it describes"),
        ("date,release,value\n2024-01-01,2024-04-25 12:30:00,\n", "row 1, field 'value': value is missing"),
        ("date,release,value\n2024-01-01,2024-04-25 12:30:00,abc\n", "field 'value'"),
        ("date,release,value\n2024-01-01,2024-04-25 12:30:00,1.6\n2024-01-01,2024-04-25 12:30:00,1.7\n",
         "row 2, field 'value': value 1.7 differs from another row of the same series, period and release"),
        ("date,release,value\n2024-01-01,2099-01-01 00:00:00,1.6\n", "is in the future"),
        ("date,release,value\n03/04/2024,2024-05-01 00:00:00,1.6\n", "day and month cannot be told apart"),
        ("date,release,value\nQ1 2024,2024-05-01 00:00:00,1.6\n", "field 'date': value 'Q1 2024' is not a date"),
    ],
)  # fmt: skip
def test_malformed_or_impossible_rows_are_one_line_and_leave_the_lake_as_it_was(
    cli: Callable[..., Result], lake_root: Path, tmp_path: Path, body: str, message: str
) -> None:
    assert ingest(cli, write_text(tmp_path / "gdp.csv", GDP)).exit_code == 0
    before = snapshot(lake_root)
    result = ingest(cli, write_text(tmp_path / "bad.csv", body))
    assert result.exit_code != 0
    assert message in result.stderr and "bad.csv" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(lake_root) == before


def test_a_file_without_a_series_name_is_refused(cli: Callable[..., Result], tmp_path: Path) -> None:
    path = write_text(tmp_path / "gdp.csv", GDP)
    result = cli("data", "ingest", "csv", str(path), "--kind", "series", "--dataset", "macro",
                 "--map", "release=published_at")  # fmt: skip
    assert result.exit_code != 0 and "series" in result.stderr


def test_data_list_and_show_describe_a_series_dataset(cli: Callable[..., Result], tmp_path: Path) -> None:
    assert ingest(cli, write_text(tmp_path / "gdp.csv", GDP)).exit_code == 0
    listed = cli("data", "list")
    assert listed.exit_code == 0 and "series" in listed.output and "macro" in listed.output
    shown = cli("data", "show", "macro", "--kind", "series")
    assert shown.exit_code == 0, shown.output
    assert "GDP" in shown.output and "3" in shown.output
