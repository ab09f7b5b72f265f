#!/usr/bin/env bash
# Regenerate docs/results/token_models_kdd17.md: ingest KDD17 into a lake, tokenize its bars (Brooks tokens),
# pre-train BERT on the tokens before 2015 (masked LM; skipped when the run is there), then walk forward over 2016:
# PatchTST on prices, the fine-tuned token model and the fusion of both, against the majority class and the previous
# 5-day sign (about 8 minutes of 2 shared CPU cores). Torch runs one thread per process (OMP_NUM_THREADS=1 unless set):
# small models on a shared machine run faster than with two.
# Usage: bash scripts/results_token_models_kdd17.sh [PATH/TO/kdd17-acl18-advalstm]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/kdd17-acl18-advalstm}"
LAKE="${FINFUSION_LAKE:-runs/kdd17-lake}"
MLM=runs/token-mlm-kdd17
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
bash scripts/setup.sh
.venv/bin/finfusion data ingest kdd17 "$DATA" --lake "$LAKE"
.venv/bin/finfusion tokenize brooks kdd17 --top 5 --lake "$LAKE"
if [ ! -f "$MLM/model.safetensors" ]; then
  .venv/bin/finfusion train --config token_mlm_kdd17 --lake "$LAKE" --run "$MLM" trainer.enable_progress_bar=false
fi
.venv/bin/finfusion evaluate --config token_fusion_kdd17 model.pretrained="$MLM" data.vocabulary="$MLM" \
  trainer.enable_progress_bar=false --lake "$LAKE" --run runs/token_fusion_kdd17-eval \
  --markdown docs/results/token_models_kdd17.md
