"""Render docs/results/throughput.md from the outputs of benchmarks/train_throughput.py in a folder.

python scripts/render_throughput.py runs/throughput docs/results/throughput.md
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers

from finfusion.machine import cpu_name

COLUMNS = [
    ("train windows/s, ours", "ours"),
    ("train windows/s, HF", "reference"),
    ("train ratio", "train_ratio"),
    ("inference windows/s, ours", "ours_inference"),
    ("inference windows/s, HF", "reference_inference"),
    ("inference ratio", "inference_ratio"),
    ("held-out MSE, ours", "ours_mse"),
    ("held-out MSE, HF", "hf_mse"),
    ("MSE gap spread over seeds", "mse_seed_spread"),
]

ACCURACY = ("ours_mse", "hf_mse", "zero_mse", "ours_mase", "hf_mase")


def last_json(path: Path) -> dict[str, float]:
    """The JSON object on the last non-empty line of one benchmark output."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{path}: empty benchmark output")
    return json.loads(lines[-1])


def setting(result: dict[str, float]) -> tuple[int, str, float]:
    """What a run measured under: (threads, the reference's norm layer, the market's AR(1) coefficient)."""
    return int(result["threads"]), str(result["reference_norm"]), float(result["autocorrelation"])


def table(runs: list[tuple[str, dict[str, float]]]) -> list[str]:
    rows = ["| run | threads | reference norm | market AR(1) | " + " | ".join(label for label, _ in COLUMNS) + " |"]
    rows.append("|---" * (len(COLUMNS) + 4) + "|")
    for name, result in runs:
        cells = " | ".join(str(result[key]) for _, key in COLUMNS)
        rows.append(f"| {name} | {' | '.join(str(part) for part in setting(result))} | {cells} |")
    return rows


def main(folder: Path, out: Path) -> None:
    runs = [(path.stem, last_json(path)) for path in sorted(folder.glob("*.txt"))]
    if not runs:
        raise SystemExit(f"{folder}: no benchmark outputs (*.txt)")
    groups: dict[tuple[int, str, float], list[dict[str, float]]] = {}
    for _, result in runs:
        groups.setdefault(setting(result), []).append(result)
    lines = [
        "# PatchTST throughput: finfusion against transformers.PatchTSTForPrediction",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `bash scripts/results_throughput.sh` "
        "(do not edit by hand).",
        "",
        f"- Machine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores visible, no GPU; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}",
        "- Shape (both models): context 64, horizon 30, 5 channels, patches of 8 every 8 bars, d_model 128, 3 layers, "
        "4 heads, feed-forward 256, no dropout, flatten head, batch 64, fp32; see benchmarks/train_throughput.py.",
        "- Ratios are ours / HF (> 1: finfusion is faster); each timing is the median of 50 alternating calls.",
        "- Reference norm: the reference's default BatchNorm, or LayerNorm like ours (`--reference-norm layernorm`).",
        "- Accuracy: held-out MSE and MASE after the same AdamW steps on the same batches, mean over seeds (3 by "
        "default), on the synthetic market whose daily shocks have the AR(1) coefficient shown (`--autocorrelation`); "
        "the zero forecast is the MSE of predicting no return.",
        "",
        "## Medians over runs",
        "",
        "| threads | reference norm | market AR(1) | runs | train ratio | inference ratio "
        "| held-out MSE ours / HF | zero forecast MSE | MASE ours / HF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (threads, norm, phi), results in sorted(groups.items(), key=lambda item: (-item[0][0], *item[0][1:])):
        med = {key: statistics.median(r[key] for r in results) for key in ("train_ratio", "inference_ratio", *ACCURACY)}
        ratios = f"{med['train_ratio']:.3f} | {med['inference_ratio']:.3f}"
        mse = f"{med['ours_mse']:.4f} / {med['hf_mse']:.4f} | {med['zero_mse']:.4f}"
        accuracy = f"{mse} | {med['ours_mase']:.4f} / {med['hf_mase']:.4f}"
        lines.append(f"| {threads} | {norm} | {phi} | {len(results)} | {ratios} | {accuracy} |")
    lines += ["", "## Every run", "", *table(runs), ""]
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
