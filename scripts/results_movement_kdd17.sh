#!/usr/bin/env bash
# Regenerate docs/results/movement_kdd17.md: ingest KDD17 into a lake, then evaluate the movement classifier in
# Adv-ALSTM's KDD17 setting against the direction baselines (5 seeds, selection on validation, test scored once).
# Usage: bash scripts/results_movement_kdd17.sh [PATH/TO/kdd17-acl18-advalstm]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/kdd17-acl18-advalstm}"
LAKE="${FINFUSION_LAKE:-runs/kdd17-lake}"
bash scripts/setup.sh
.venv/bin/finfusion data ingest kdd17 "$DATA" --lake "$LAKE"
.venv/bin/finfusion evaluate --config movement_kdd17 --lake "$LAKE" --run runs/movement_kdd17-eval \
  --markdown docs/results/movement_kdd17.md
