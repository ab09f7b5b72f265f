#!/usr/bin/env bash
# Create ./.venv (if needed) and install exactly the locked versions (requirements.lock, made by uv from pyproject.toml;
# torch 2.13.0 CPU) and finfusion itself, editable. A venv already in sync takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
source scripts/uv_env.sh
ensure_uv
.venv/bin/uv pip sync --quiet requirements.lock
.venv/bin/uv pip install --quiet --no-deps -e .
