#!/usr/bin/env bash
# Regenerate docs/results/throughput.md: benchmarks/train_throughput.py (our PatchTST against
# transformers.PatchTSTForPrediction, same shape, same run) three times on torch's default threads, once on one
# thread and once with the reference given our LayerNorm; the page lists every run's JSON line and the medians.
# Usage: bash scripts/results_throughput.sh   (about 20 minutes on 2 CPU cores; keep the machine otherwise idle)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p runs/throughput
for run in 1 2 3; do
  .venv/bin/python benchmarks/train_throughput.py | tee "runs/throughput/default-$run.txt"
done
.venv/bin/python benchmarks/train_throughput.py --threads 1 | tee runs/throughput/one-thread.txt
.venv/bin/python benchmarks/train_throughput.py --reference-norm layernorm | tee runs/throughput/reference-layernorm.txt
.venv/bin/python scripts/render_throughput.py runs/throughput docs/results/throughput.md
