#!/usr/bin/env bash
# Regenerate docs/results/throughput.md: benchmarks/train_throughput.py (our PatchTST against
# transformers.PatchTSTForPrediction, same shape, same run) three times on torch's default threads, three times with
# the reference given our LayerNorm, once on one thread, and once each against both references on a synthetic market
# with stronger structure (AR(1) 0.9); the page lists every run's JSON line and the medians.
# Usage: bash scripts/results_throughput.sh   (about 30 minutes on 2 CPU cores; keep the machine otherwise idle)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -rf runs/throughput
mkdir -p runs/throughput
bench() {
  local name=$1
  shift
  .venv/bin/python benchmarks/train_throughput.py "$@" | tee "runs/throughput/$name.txt"
}
for run in 1 2 3; do
  bench "default-$run"
  bench "reference-layernorm-$run" --reference-norm layernorm
done
bench one-thread --threads 1
bench ar09 --autocorrelation 0.9
bench ar09-reference-layernorm --autocorrelation 0.9 --reference-norm layernorm
.venv/bin/python scripts/render_throughput.py runs/throughput docs/results/throughput.md
