"""Killed writers and concurrent writers: an ingest of many partitions killed (SIGKILL) during its temporary writes,
its renames, its commit record or right after its manifest leaves the lake as it was or as a completed ingest left
it; two ingests of one archive at once both succeed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pytest

from finfusion.data.catalog import Catalog
from finfusion.data.lake import Lake
from tests.conftest import snapshot

SYMBOLS = 30
KILLER = """
import os, signal, sys
from pathlib import Path
import polars as pl
from finfusion.data import commits
from finfusion.data.lake import Lake
from finfusion.data.sources.file_ingest import FileIngest
from finfusion.data.ingest import BarOptions, TextOptions

root, csv, point, nth = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
calls = [0]

def kill_at_call():
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)

if point == "write":
    real_write = pl.DataFrame.write_parquet
    def write(self, *args, **kwargs):
        kill_at_call()
        real_write(self, *args, **kwargs)
    pl.DataFrame.write_parquet = write
elif point == "rename":
    real_replace = os.replace
    def replace(source, target):
        kill_at_call()
        real_replace(source, target)
    os.replace = replace
elif point == "committed":
    commits._fsync_folder = lambda folder: kill_at_call()
lake = Lake(root)
FileIngest(lake, "bars", {}, BarOptions("prices"), TextOptions("prices"))(csv, "prices")
"""


def market_csv(path: Path, symbols: int, days: int) -> Path:
    """Long-format daily bars of `symbols` symbols over the first `days` NYSE sessions from 2015-01-05."""
    lines = ["symbol,date,open,high,low,close,volume"]
    every_day = (date(2015, 1, 5) + timedelta(days=d) for d in range(40))
    sessions = [day for day in every_day if day.weekday() < 5 and day != date(2015, 1, 19)]  # Martin Luther King day
    for s in range(symbols):
        for d, day in enumerate(sessions[:days]):
            price = 10 + s + d / 10
            lines.append(f"S{s:02d},{day.isoformat()},{price},{price + 1},{price - 1},{price + 0.5},{100 + d}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_ingest(root: Path, csv: Path, point: str = "none", nth: int = 0) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, "-c", KILLER, str(root), str(csv), point, str(nth)]
    return subprocess.run(args, env=env, capture_output=True, timeout=120).returncode


def committed_view(root: Path) -> dict[str, object]:
    """What readers see: every committed file's bytes by path, and every dataset's metadata."""
    lake = Lake(root)
    view: dict[str, object] = {}
    for kind, dataset, freq in lake.datasets():
        view[f"{kind}/{dataset}/meta"] = lake.metadata(kind, dataset)
        for path in lake.files(kind, dataset, freq):
            view[path.relative_to(root).as_posix()] = path.read_bytes()
    return view


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(before-lake template, completed-lake reference, the seed CSV, the full CSV)."""
    folder = tmp_path_factory.mktemp("crash")
    seed = market_csv(folder / "seed" / "prices.csv", symbols=10, days=10)
    full = market_csv(folder / "full" / "prices.csv", symbols=SYMBOLS, days=20)
    before = folder / "before"
    assert run_ingest(before, seed) == 0
    completed = folder / "completed"
    assert run_ingest(completed, seed) == 0
    assert run_ingest(completed, full) == 0
    return before, completed, seed, full


@pytest.mark.parametrize(
    ("point", "nth", "outcome"),
    [
        pytest.param("write", 1, "before", id="first-temporary-write"),
        pytest.param("write", SYMBOLS // 2, "before", id="middle-temporary-write"),
        pytest.param("rename", 1, "before", id="first-rename"),
        pytest.param("rename", SYMBOLS, "before", id="last-data-rename"),
        pytest.param("rename", SYMBOLS + 1, "before", id="commit-record"),
        pytest.param("rename", SYMBOLS + 2, "before", id="manifest"),
        pytest.param("committed", 1, "completed", id="after-manifest"),
    ],
)
def test_a_killed_ingest_leaves_the_lake_before_or_completed(
    tmp_path: Path, lakes: tuple[Path, Path, Path, Path], point: str, nth: int, outcome: str
) -> None:
    template, completed, _, full = lakes
    root = tmp_path / "lake"
    root.mkdir()
    for path in template.rglob("*"):
        if path.is_file():
            target = root / path.relative_to(template)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    before = snapshot(root)
    assert run_ingest(root, full, point, nth) == -9  # really killed
    assert Catalog(Lake(root)).datasets().height == 1  # `data list` works
    expected = committed_view(template if outcome == "before" else completed)
    assert committed_view(root) == expected
    with Lake(root).transaction():  # the next writer sweeps what the killed one left
        pass
    if outcome == "before":
        assert snapshot(root) == before
    assert not list(root.rglob("*.tmp"))
    assert run_ingest(root, full) == 0  # and the ingest then completes
    assert committed_view(root) == committed_view(completed)


def test_two_ingests_of_one_archive_at_once_both_succeed(tmp_path: Path, lakes: tuple[Path, Path, Path, Path]) -> None:
    full = lakes[3]
    archive = tmp_path / "prices.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(full, "dump/prices.csv")
    root = tmp_path / "lake"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "finfusion", "data", "ingest", "archive", str(archive), "--dataset", "prices"]
    runs = [subprocess.Popen([*command, "--lake", str(root)], env=env, stderr=subprocess.PIPE) for _ in range(2)]
    errors = [run.communicate(timeout=120)[1].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    frame = Lake(root).read("bars", "prices", freq="1d")
    assert frame.height == SYMBOLS * 20 and frame["symbol"].n_unique() == SYMBOLS
    assert not (root / "_staging").exists()
