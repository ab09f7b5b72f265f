"""Ingest memory and throughput: our validating, streamed CSV -> lake ingest against pandas CSV -> Parquet.

Memory (the target): one long-format CSV (`symbol,Date,Open,High,Low,Close,Volume`) of 1,000,000 rows (400 symbols x
2,500 sessions) and one of 4,000,000 rows (1,600 symbols), each ingested by `FileIngest` in a fresh process; the
process's peak resident memory (start-up included) is its VmHWM (getrusage would carry the parent's peak over
exec). ratio = 4 x peak(1M) / peak(4M): 4 when
memory does not grow with the file at all, 1 when it grows in proportion; the target is >= 3. On the 4M file the
same run times pandas `read_csv` + `to_parquet` (in a fresh process too), and ours must not be slower.

Throughput, on the same generated files in the same run:

* daily: 500 CSV files (`SYM000.csv` ...), 2,520 consecutive XNYS sessions each, header
  `Date,Open,High,Low,Close,Adj Close,Volume` (1,260,000 rows);
* minute: 20 CSV files, 100,000 one-minute bars each (2,000,000 rows), header `Datetime,Open,High,Low,Close,Volume`,
  timestamps are bar starts inside XNYS sessions in America/New_York wall-clock time.

Ours is what `finfusion data ingest csv` runs for a folder of bar files (`FileIngest`): the files streamed into
buckets by symbol, then per bucket parse, validate every row, map to sessions, order checks, gap count, adjustment,
volume anomalies, and partitioned zstd Parquet writes committed at once, into a fresh lake each repetition.
The reference is, for every file, `pandas.read_csv(path)` then `DataFrame.to_parquet(out)` (pyarrow), into a fresh
folder each repetition: no validation at all.

Each side runs `--repeats` times per dataset; the median seconds are reported (the machine is shared and noisy).
Rows per second over both datasets is total rows / the sum of the median seconds. After every repetition of ours the
lake is read back and must hold exactly the expected number of rows; the throughput JSON line
{"benchmark": "ingest", ..., "unit": "rows/s", ...} comes before the memory one. The last line is one JSON object:
{"benchmark": "ingest_memory", "ours": peak(4M) MiB, "reference": 4 x peak(1M) MiB, "unit": "MiB", "ratio": ...}.

    python benchmarks/ingest.py            # full size (several minutes)
    python benchmarks/ingest.py --quick    # tiny inputs, to smoke-test the script
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from fresh_process import run_fresh

from finfusion.data.calendar import US_PER_MINUTE, from_us, get_calendar
from finfusion.data.ingest import BarOptions, TextOptions
from finfusion.data.lake import Lake
from finfusion.data.sources.file_ingest import FileIngest

CALENDAR = "XNYS"
LAST_SESSION = np.datetime64("2019-12-31", "D")
SEED = 20240601


@dataclass(frozen=True)
class Size:
    daily_symbols: int
    daily_bars: int
    minute_symbols: int
    minute_bars: int  # per symbol


FULL = Size(daily_symbols=500, daily_bars=2_520, minute_symbols=20, minute_bars=100_000)
QUICK = Size(daily_symbols=20, daily_bars=252, minute_symbols=4, minute_bars=25_000)
#: (symbols, sessions) of the long files of the memory comparison: 1M and 4M rows (quick: 10k and 40k).
LONG_BARS = 2_500
LONG_FULL = (400, 1_600)
LONG_QUICK = (4, 16)

#: Runs in a fresh process: ingest one file, print rows, seconds and peak resident KiB (VmHWM: this process only).
OURS_CHILD = """
import re, sys, time
from pathlib import Path
from finfusion.data.ingest import BarOptions, TextOptions
from finfusion.data.lake import Lake
from finfusion.data.sources.file_ingest import FileIngest
start = time.perf_counter()
ingest = FileIngest(Lake(sys.argv[1]), "bars", {}, BarOptions("long"), TextOptions("long"))
report = ingest(Path(sys.argv[2]), "long")
peak = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)
print(report.rows_written, time.perf_counter() - start, peak)
"""
PANDAS_CHILD = """
import re, sys, time
from pathlib import Path
import pandas as pd
start = time.perf_counter()
frame = pd.read_csv(sys.argv[2])
frame.to_parquet(sys.argv[1], engine="pyarrow")
peak = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)
print(len(frame), time.perf_counter() - start, peak)
"""


@dataclass(frozen=True)
class Dataset:
    name: str
    freq: str
    folder: Path
    rows: int


# ---------------------------------------------------------------------------------------------------- input data


def _ohlcv(rng: np.random.Generator, n: int, daily: bool) -> dict[str, np.ndarray]:
    """Valid bars [n]: a positive random walk with open/close inside [low, high], rounded to 4 decimals."""
    sigma = 0.015 if daily else 0.0008
    close = 50.0 * rng.uniform(0.5, 2.0) * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    open_ = close * np.exp(rng.normal(0.0, sigma / 2, n))
    top = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, sigma, n))
    bottom = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, sigma, n))
    volume = rng.integers(1_000, 5_000_000 if daily else 50_000, n)
    # Rounding is monotonic, so high >= max(open, close) and low <= min(open, close) still hold afterwards.
    return {
        "Open": np.round(open_, 4),
        "High": np.round(top, 4),
        "Low": np.round(bottom, 4),
        "Close": np.round(close, 4),
        "Volume": volume,
    }


def _write_daily(folder: Path, size: Size, rng: np.random.Generator) -> int:
    calendar = get_calendar(CALENDAR)
    end = int(np.searchsorted(calendar.sessions, LAST_SESSION, side="right"))
    dates = pl.Series("Date", calendar.sessions[end - size.daily_bars : end]).cast(pl.Date).dt.strftime("%Y-%m-%d")
    folder.mkdir(parents=True)
    for i in range(size.daily_symbols):
        bars = _ohlcv(rng, size.daily_bars, daily=True)
        adj = np.round(bars["Close"] * rng.uniform(0.8, 1.0), 4)
        frame = pl.DataFrame(
            {
                "Date": dates,
                "Open": bars["Open"],
                "High": bars["High"],
                "Low": bars["Low"],
                "Close": bars["Close"],
                "Adj Close": adj,
                "Volume": bars["Volume"],
            }
        )
        frame.write_csv(folder / f"SYM{i:03d}.csv")
    return size.daily_symbols * size.daily_bars


def _minute_starts(count: int) -> pl.Series:
    """The last `count` one-minute bar starts (UTC instants) of XNYS sessions up to LAST_SESSION, half days included."""
    calendar = get_calendar(CALENDAR)
    end = int(np.searchsorted(calendar.sessions, LAST_SESSION, side="right"))
    starts: list[np.ndarray] = []
    total, i = 0, end - 1
    while total < count:
        session = np.arange(calendar.opens[i], calendar.closes[i], US_PER_MINUTE, dtype=np.int64)
        starts.append(session)
        total += len(session)
        i -= 1
    return from_us(np.concatenate(starts[::-1])[-count:], "Datetime")


def _write_minute(folder: Path, size: Size, rng: np.random.Generator) -> int:
    local = _minute_starts(size.minute_bars).dt.convert_time_zone(get_calendar(CALENDAR).tz)
    stamps = local.dt.strftime("%Y-%m-%d %H:%M:%S")
    folder.mkdir(parents=True)
    for i in range(size.minute_symbols):
        bars = _ohlcv(rng, size.minute_bars, daily=False)
        pl.DataFrame({"Datetime": stamps, **bars}).write_csv(folder / f"MIN{i:02d}.csv")
    return size.minute_symbols * size.minute_bars


# ---------------------------------------------------------------------------------------------------- the two sides


def run_ours(dataset: Dataset, lake_root: Path) -> float:
    """Seconds for FileIngest of the whole folder into a fresh lake; checks the rows that landed."""
    start = time.perf_counter()
    lake = Lake(lake_root)
    options = BarOptions(dataset=dataset.name, freq=dataset.freq)
    report = FileIngest(lake, "bars", {}, options, TextOptions(dataset.name))(dataset.folder, dataset.name)
    seconds = time.perf_counter() - start
    stored = lake.read("bars", dataset.name, freq=dataset.freq).height
    if not (report.rows_written == stored == dataset.rows):
        raise AssertionError(
            f"{dataset.name}: expected {dataset.rows} rows, wrote {report.rows_written}, read {stored}"
        )
    return seconds


def run_pandas(dataset: Dataset, out: Path) -> float:
    """Seconds for pandas.read_csv + DataFrame.to_parquet (pyarrow) of every file into a fresh folder."""
    start = time.perf_counter()
    out.mkdir(parents=True)
    rows = 0
    for path in sorted(dataset.folder.glob("*.csv")):
        frame = pd.read_csv(path)
        frame.to_parquet(out / f"{path.stem}.parquet", engine="pyarrow")
        rows += len(frame)
    seconds = time.perf_counter() - start
    if rows != dataset.rows:
        raise AssertionError(f"{dataset.name}: pandas read {rows} rows, expected {dataset.rows}")
    return seconds


def median_seconds(side: Callable[[Dataset, Path], float], dataset: Dataset, scratch: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        target = scratch / "target"
        times.append(side(dataset, target))
        shutil.rmtree(target)
    return statistics.median(times)


def _write_long(path: Path, symbols: int, rng: np.random.Generator) -> int:
    """One long-format CSV: `symbols` symbols x LONG_BARS sessions (or fewer in --quick), sorted by symbol."""
    calendar = get_calendar(CALENDAR)
    end = int(np.searchsorted(calendar.sessions, LAST_SESSION, side="right"))
    dates = pl.Series("Date", calendar.sessions[end - LONG_BARS : end]).cast(pl.Date).dt.strftime("%Y-%m-%d")
    frames = []
    for i in range(symbols):
        frames.append(pl.DataFrame({"symbol": f"L{i:04d}", "Date": dates, **_ohlcv(rng, LONG_BARS, daily=True)}))
    frame = pl.concat(frames)
    frame.write_csv(path)
    return frame.height


def run_child(code: str, out: Path, csv: Path) -> tuple[int, float, float]:
    """(rows, seconds, peak MiB) of `code` run in a fresh Python process on `csv`."""
    rows, seconds, peak_kib = run_fresh(code, str(out), str(csv))
    return int(rows), float(seconds), int(peak_kib) / 1024


def memory_comparison(root: Path, symbols: tuple[int, int], rng: np.random.Generator, repeats: int) -> None:
    """Peak memory of ours on the 1M and 4M files, and throughput against pandas on the 4M file; prints both JSON
    lines (memory last)."""
    peaks: dict[int, float] = {}
    for count in symbols:
        csv = root / f"long-{count}.csv"
        rows = _write_long(csv, count, rng)
        runs = []
        for _ in range(repeats):
            runs.append(run_child(OURS_CHILD, root / "lake", csv))
            shutil.rmtree(root / "lake")
            if runs[-1][0] != rows:
                raise AssertionError(f"expected {rows} rows, wrote {runs[-1][0]}")
        peaks[rows] = statistics.median(r[2] for r in runs)
        print(f"ours   {rows:>10,} rows: peak {peaks[rows]:>8.1f} MiB, {statistics.median(r[1] for r in runs):.2f} s")
        if count == symbols[-1]:
            reference = [run_child(PANDAS_CHILD, root / "out.parquet", csv) for _ in range(repeats)]
            ours_s = statistics.median(r[1] for r in runs)
            pandas_s = statistics.median(r[1] for r in reference)
            peak_pd = statistics.median(r[2] for r in reference)
            print(f"pandas {rows:>10,} rows: peak {peak_pd:>8.1f} MiB, {pandas_s:.2f} s (read_csv + to_parquet)")
            print(
                json.dumps(
                    {
                        "benchmark": "ingest_long_file",
                        "ours": round(rows / ours_s, 1),
                        "reference": round(rows / pandas_s, 1),
                        "unit": "rows/s",
                        "ratio": round(pandas_s / ours_s, 4),
                    }
                )
            )
        csv.unlink()
    small, large = sorted(peaks)
    print(
        json.dumps(
            {
                "benchmark": "ingest_memory",
                "ours": round(peaks[large], 1),
                "reference": round(peaks[small] * large / small, 1),
                "unit": "MiB",
                "ratio": round(peaks[small] * (large / small) / peaks[large], 4),
            }
        )
    )


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per side and dataset (median reported)")
    parser.add_argument("--quick", action="store_true", help="a tiny input to smoke-test the script")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    rng = np.random.default_rng(SEED)

    with tempfile.TemporaryDirectory(prefix="finfusion-bench-ingest-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        datasets = [
            Dataset("daily", "1d", root / "daily", _write_daily(root / "daily", size, rng)),
            Dataset("minute", "1m", root / "minute", _write_minute(root / "minute", size, rng)),
        ]
        print(f"generated input in {time.perf_counter() - started:.1f}s; {args.repeats} repeats per side, medians")

        results: list[tuple[Dataset, float, float]] = []
        for dataset in datasets:
            ours = median_seconds(run_ours, dataset, root, args.repeats)
            reference = median_seconds(run_pandas, dataset, root, args.repeats)
            results.append((dataset, ours, reference))

    header = (
        f"{'dataset':<8} {'rows':>10} {'ours s':>8} {'pandas s':>9} "
        f"{'ours rows/s':>12} {'pandas rows/s':>14} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for dataset, ours, reference in results:
        print(
            f"{dataset.name:<8} {dataset.rows:>10,} {ours:>8.2f} {reference:>9.2f} "
            f"{dataset.rows / ours:>12,.0f} {dataset.rows / reference:>14,.0f} {reference / ours:>6.2f}"
        )
    rows = sum(d.rows for d, _, _ in results)
    ours_total = sum(o for _, o, _ in results)
    reference_total = sum(r for _, _, r in results)
    ours_rate, reference_rate = rows / ours_total, rows / reference_total
    print(
        f"{'total':<8} {rows:>10,} {ours_total:>8.2f} {reference_total:>9.2f} "
        f"{ours_rate:>12,.0f} {reference_rate:>14,.0f} {ours_rate / reference_rate:>6.2f}"
    )
    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "ours": round(ours_rate, 1),
                "reference": round(reference_rate, 1),
                "unit": "rows/s",
                "ratio": round(ours_rate / reference_rate, 4),
            }
        )
    )
    with tempfile.TemporaryDirectory(prefix="finfusion-bench-ingest-memory-") as tmp:
        memory_comparison(Path(tmp), LONG_QUICK if args.quick else LONG_FULL, rng, args.repeats)


if __name__ == "__main__":
    main()
