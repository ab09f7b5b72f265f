#!/usr/bin/env bash
# Regenerate docs/results/kdd17.md: ingest KDD17 into a lake, then walk-forward evaluate every model against the
# random walk (Diebold-Mariano). Usage: bash scripts/results_kdd17.sh [PATH/TO/kdd17-acl18-advalstm]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/kdd17-acl18-advalstm}"
LAKE="${FINFUSION_LAKE:-runs/kdd17-lake}"
bash scripts/setup.sh
.venv/bin/finfusion data ingest kdd17 "$DATA" --lake "$LAKE"
.venv/bin/finfusion evaluate --config kdd17_walk_forward --lake "$LAKE" --run runs/kdd17-eval \
  --markdown docs/results/kdd17.md
