#!/usr/bin/env bash
# Create ./.venv (if needed) and install exactly the locked versions (requirements.lock, made by uv from pyproject.toml;
# torch 2.13.0 CPU) and finfusion itself, editable. A venv already in sync takes a few seconds.
# Bytecode is compiled at install (once, about 40 s on 2 cores) and for src/: where PYTHONDONTWRITEBYTECODE is set,
# Python would otherwise recompile torch, pandas and the rest from source in every process.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
source scripts/uv_env.sh
ensure_uv
.venv/bin/uv pip sync --quiet --compile-bytecode requirements.lock
.venv/bin/uv pip install --quiet --no-deps -e .
.venv/bin/python -m compileall -q src
