#!/usr/bin/env bash
# Regenerate tests/fixtures/moirai with the reference implementation: uni2ts 1.1.1 in its own environment (it cannot
# live beside finfusion's numpy 2), then the fixture writer. Needs PyPI; the test suite never runs this.
#
#     bash scripts/moirai_parity_fixtures.sh            # environment in .uni2ts-env (reused), fixtures rewritten
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=.uni2ts-env
if [ ! -x "$ENV/bin/python" ]; then
  python3 -m venv "$ENV"
  "$ENV/bin/pip" install --quiet torch==2.13.0 uni2ts==1.1.1
fi
OUT=$(mktemp -d)
"$ENV/bin/python" scripts/moirai_parity_fixtures.py "$OUT"
rm -rf tests/fixtures/moirai
mkdir -p tests/fixtures/moirai/checkpoint
cp "$OUT/checkpoint/config.json" "$OUT/checkpoint/model.safetensors" tests/fixtures/moirai/checkpoint/
cp "$OUT/expected.safetensors" "$OUT/versions.json" tests/fixtures/moirai/
rm -rf "$OUT"
echo "wrote tests/fixtures/moirai ($(du -sh tests/fixtures/moirai | cut -f1))"
