#!/usr/bin/env bash
# Upgrade the locked versions deliberately: resolve pyproject.toml afresh (newest releases it allows), install them
# into .venv and run the test suite; the new requirements.lock is kept only when the suite passes, else .venv is put
# back on the old lock. Extra arguments go to `uv pip compile` (e.g. --upgrade-package polars to move one package).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/uv_env.sh
candidate=$(mktemp --suffix=.lock)
trap 'rm -f "$candidate"' EXIT
upgrade=(--upgrade)
[ "$#" -gt 0 ] && upgrade=("$@")
.venv/bin/uv pip compile --quiet pyproject.toml --extra dev --extra hub --extra ray --python-version 3.11 \
  --output-file "$candidate" --custom-compile-command "bash scripts/upgrade-lock.sh" "${upgrade[@]}"
diff -u requirements.lock "$candidate" || true
.venv/bin/uv pip sync --quiet "$candidate" && .venv/bin/uv pip install --quiet --no-deps -e .
if .venv/bin/python -m pytest -n 2 -q; then
  cp "$candidate" requirements.lock
  echo "requirements.lock upgraded: the suite passed on the new versions; commit it"
else
  bash scripts/setup.sh
  echo "the suite failed on the new versions: requirements.lock and .venv are left on the old ones" >&2
  exit 1
fi
