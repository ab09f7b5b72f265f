"""LOBSTER order-book files into the lake: a valid day round-trips, and every malformed or impossible file is one
line naming file, row and field, a non-zero exit, and the lake left byte-identical."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from typer.testing import Result

from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic_lob import LobConfig, write_lobster_days
from tests.conftest import snapshot

CONFIG = LobConfig(levels=3, events=200, seed=4)


@pytest.fixture
def day(tmp_path: Path) -> tuple[Path, Path]:
    written = write_lobster_days(tmp_path / "files", "SYNL", [date(2024, 1, 2)], CONFIG)[0]
    return written.message, written.orderbook


def ingest(cli: Callable[..., Result], message: Path, book: Path) -> Result:
    return cli("orderbook", "ingest", str(message), str(book), "--symbol", "SYNL", "--date", "2024-01-02")


def test_a_valid_day_round_trips(cli: Callable[..., Result], lake_root: Path, day: tuple[Path, Path]) -> None:
    message, book = day
    levels = np.loadtxt(book, delimiter=",", dtype=np.int64)
    empty = np.tile([9_999_999_999, 0, -9_999_999_999, 0], (len(levels), 1))  # LOBSTER's empty level
    np.savetxt(book, np.hstack([levels, empty]), delimiter=",", fmt="%d")
    result = ingest(cli, message, book)
    assert result.exit_code == 0, result.output
    rows = Lake(lake_root).read("orderbooks", "lobster")
    assert rows.height == CONFIG.events and rows["event"].to_list() == list(range(1, CONFIG.events + 1))
    first = rows.row(0, named=True)
    assert len(first["ask_price"]) == CONFIG.levels + 1 and first["ask_price"][-1] is None  # the dummy level
    assert 90 < first["ask_price"][0] < 110 and first["ask_price"][0] > first["bid_price"][0]
    assert rows["ts"].dt.hour().min() >= 14  # 09:30 New York is 14:30 UTC in January


def _edit_line(path: Path, row: int, edit: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines()
    lines[row - 1] = ",".join(edit(lines[row - 1].split(",")))
    path.write_text("\n".join(lines) + "\n")


CASES = {
    "crossed book": ("book", lambda f: [f[2], f[1], f[0], *f[3:]], "crossed book", "ask_price_1"),
    "negative size": ("book", lambda f: [f[0], "-5", *f[2:]], "negative ask size", "ask_size"),
    "time going back": ("message", lambda f: ["1.0", *f[1:]], "time goes backwards", "time"),
    "event type": ("message", lambda f: [f[0], "9", *f[2:]], "event type outside 1-7", "event_type"),
    "not a number": ("message", lambda f: [f[0], f[1], "abc", *f[3:]], "'abc' is not a number", "column 3"),
    "short row": ("book", lambda f: f[:-1], "fields, expected", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_files_are_one_line_and_leave_the_lake_as_it_was(
    cli: Callable[..., Result], lake_root: Path, day: tuple[Path, Path], case: str
) -> None:
    message, book = day
    assert ingest(cli, message, book).exit_code == 0
    before = snapshot(lake_root)
    which, edit, text, field = CASES[case]
    target = book if which == "book" else message
    _edit_line(target, 7, edit)
    result = ingest(cli, message, book)
    assert result.exit_code != 0
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and text in line and target.name in line and "row 7" in line, line
    if field is not None:
        assert field in line
    assert snapshot(lake_root) == before


def test_files_of_different_lengths_are_refused(
    cli: Callable[..., Result], lake_root: Path, day: tuple[Path, Path]
) -> None:
    message, book = day
    book.write_text("\n".join(book.read_text().splitlines()[:-3]) + "\n")
    result = ingest(cli, message, book)
    assert result.exit_code != 0 and "200 messages but 197 book rows" in result.output
    assert snapshot(lake_root) == {}
