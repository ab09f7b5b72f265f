#!/usr/bin/env bash
# Create ./.venv (if needed) and install exactly the locked versions (requirements.lock, made by uv from pyproject.toml;
# torch 2.13.0 CPU) and finfusion itself, editable. A venv already in sync takes a few seconds.
# COMPILE_BYTECODE=1 (scripts/test.sh) also writes the bytecode of the venv and src/ (once, about 40 s on 2 cores):
# where PYTHONDONTWRITEBYTECODE is set, every process would otherwise recompile torch, pandas and the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
source scripts/uv_env.sh
ensure_uv
compile=()
[ "${COMPILE_BYTECODE:-0}" = 1 ] && compile=(--compile-bytecode)
.venv/bin/uv pip sync --quiet "${compile[@]}" requirements.lock
.venv/bin/uv pip install --quiet --no-deps -e .
if [ "${COMPILE_BYTECODE:-0}" = 1 ]; then
  .venv/bin/python -m compileall -q src >/dev/null
fi
