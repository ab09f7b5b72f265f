"""Peak memory of the iterative per-asset dataset builder (seed 003) on 50 and on 500 synthetic assets.

The same synthetic market (daily bars, 2017-2019) is made with 50 and with 500 assets, each in its own lake; the
builder (samples/universal.py `build_shards`, batches of 10 assets, windows of 64 + 8 bars every 4 bars, the default
13 covariates) then runs on each in a fresh process, whose peak resident memory (start-up included) is its VmHWM.
ratio = 10 x peak(50) / peak(500): 10 when memory does not grow with the number of assets at all, 1 when it grows in
proportion; the target is >= 5. The shards themselves go to disk (about 0.5 MB per asset here).

The last line is one JSON object:
{"benchmark": "moirai_builder_memory", "ours": peak(500) MiB, "reference": 10 x peak(50) MiB, "unit": "MiB",
 "ratio": ...}

    python benchmarks/moirai_builder.py            # 50 and 500 assets (a few minutes)
    python benchmarks/moirai_builder.py --quick    # 5 and 50 assets, to smoke-test the script
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fresh_process import run_fresh

from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import make_and_ingest

#: Runs in a fresh process: build the shards of one lake, print windows, seconds and peak resident KiB.
CHILD = """
import re, sys, time
from pathlib import Path
from finfusion.samples.universal import BuilderConfig, build_shards
start = time.perf_counter()
config = BuilderConfig(lake=sys.argv[1], dataset="bench", lookback=64, horizon=8, stride=4, batch_assets=10)
index = build_shards(config, Path(sys.argv[2]))
peak = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)
print(sum(index.counts), time.perf_counter() - start, peak)
"""


def make_lake(root: Path, assets: int) -> None:
    config = SyntheticConfig(n_symbols=assets, start="2017-01-01", end="2019-12-31", seed=11, news_rate=0.0,
                             noise_news_rate=0.0)  # fmt: skip
    make_and_ingest(Lake(root), config, "bench")


def measure(lake: Path, out: Path) -> tuple[int, float, float]:
    """(windows, seconds, peak MiB) of the builder in a fresh process."""
    windows, seconds, peak_kib = run_fresh(CHILD, str(lake), str(out))
    return int(windows), float(seconds), int(peak_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 and 50 assets")
    args = parser.parse_args()
    small, large = (5, 50) if args.quick else (50, 500)
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="finfusion-bench-builder-") as tmp:
        root = Path(tmp)
        for assets in (small, large):
            started = time.perf_counter()
            make_lake(root / f"lake-{assets}", assets)
            made = time.perf_counter() - started
            windows, seconds, peak = measure(root / f"lake-{assets}", root / f"shards-{assets}")
            shard_mib = sum(p.stat().st_size for p in (root / f"shards-{assets}").rglob("*.npy")) / 2**20
            print(
                f"{assets:>4} assets: lake made in {made:.1f} s; builder {windows:,} windows in {seconds:.1f} s, "
                f"peak {peak:.1f} MiB, shards {shard_mib:.0f} MiB on disk"
            )
            peaks[assets] = peak
    factor = large / small
    print(
        json.dumps(
            {
                "benchmark": "moirai_builder_memory",
                "ours": round(peaks[large], 1),
                "reference": round(peaks[small] * factor, 1),
                "unit": "MiB",
                "ratio": round(peaks[small] * factor / peaks[large], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
