"""CLI start-up: `finfusion --help` against importing the model stack (`python -c "import torch, lightning"`).

What is measured, in the same run, each as a fresh process started from here (wall-clock seconds from spawn to exit):

* ours: `finfusion --help` through this interpreter (`python -m finfusion --help`): the interpreter, typer and rich,
  every command module, and the help page. The commands import torch, lightning, sentence-transformers, polars, etc.
  only when they run, so the help needs none of them;
* reference: `python -c "import torch, lightning"`: the imports every command paid for before they were made lazy,
  and what any command that trains or predicts still pays.

The sides alternate (the reference first in even repetitions, last in odd ones, as other work on a shared machine
drifts), each after one untimed warm-up run that fills the file-system cache; the median seconds are reported, as a
table and as the last line, one JSON object:
{"benchmark": "cli_startup", "ours": ..., "reference": ..., "unit": "s", "ratio": reference / ours}, ratio > 1 meaning
the help comes that many times faster than the model stack imports. Both commands must exit with status 0.

    python benchmarks/cli_startup.py               # 7 repetitions per side
    python benchmarks/cli_startup.py --repeats 3   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

OURS = [sys.executable, "-m", "finfusion", "--help"]
REFERENCE = [sys.executable, "-c", "import torch, lightning"]


def seconds(command: list[str]) -> float:
    """Wall-clock seconds of one run of `command`; raises if it fails."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per side (median reported)")
    args = parser.parse_args()

    seconds(OURS)  # warm-up: the file-system cache, .pyc files
    seconds(REFERENCE)
    ours: list[float] = []
    reference: list[float] = []
    for repeat in range(args.repeats):
        if repeat % 2 == 0:
            reference.append(seconds(REFERENCE))
            ours.append(seconds(OURS))
        else:
            ours.append(seconds(OURS))
            reference.append(seconds(REFERENCE))
    ours_median, reference_median = statistics.median(ours), statistics.median(reference)

    header = f"{'side':<30} {'runs':>5} {'median s':>9} {'min s':>7} {'max s':>7}"
    print(header)
    print("-" * len(header))
    for side, times in (("finfusion --help", ours), ("import torch, lightning", reference)):
        print(f"{side:<30} {len(times):>5} {statistics.median(times):>9.3f} {min(times):>7.3f} {max(times):>7.3f}")
    print(f"the help comes {reference_median / ours_median:.1f}x faster than importing torch and lightning")
    print(
        json.dumps(
            {
                "benchmark": "cli_startup",
                "ours": round(ours_median, 4),
                "reference": round(reference_median, 4),
                "unit": "s",
                "ratio": round(reference_median / ours_median, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
