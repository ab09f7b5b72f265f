#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite on 2 cores. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPILE_BYTECODE=1 bash scripts/setup.sh  # with the venv's bytecode: the suite's processes start faster
# The report test renders pages in headless Chromium (Debian package); install it when we can.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
    || echo "chromium could not be installed: the browser test will be skipped" >&2
fi
exec .venv/bin/python -m pytest -n 2 "$@"
