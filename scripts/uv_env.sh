# Sourced by setup.sh and upgrade-lock.sh: where uv finds the torch CPU wheel. A folder of wheels that pip is told
# about (PIP_FIND_LINKS or pip's find-links setting) when there is one, else PyTorch's CPU index.
if [ -z "${UV_FIND_LINKS:-}" ] && [ -z "${UV_EXTRA_INDEX_URL:-}" ]; then
  links="${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}"
  if [ -n "$links" ]; then
    export UV_FIND_LINKS="$links"
  else
    export UV_EXTRA_INDEX_URL="https://download.pytorch.org/whl/cpu"
  fi
fi
export UV_PYTHON=.venv/bin/python
UV_VERSION=0.13.10
ensure_uv() {
  if [ ! -x .venv/bin/uv ] || [ "$(.venv/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    .venv/bin/python -m pip install --quiet "uv==$UV_VERSION"
  fi
}
