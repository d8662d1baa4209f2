#!/usr/bin/env bash
# Create .venv in the repo root (once) and install graphfix into it, editable.
#   bash scripts/setup.sh          graphfix and its dependencies (TensorFlow, numpy, protobuf): the demo
#   bash scripts/setup.sh test     also the test extras (pytest, hypothesis, tf-keras, LiteRT, ...)
# Re-running is cheap: an install is skipped while pyproject.toml is unchanged since it last ran.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "graphfix setup: creating .venv with $("$PYTHON" --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.graphfix-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  echo "graphfix setup: installing graphfix${extras:+ with its $extras extras} (TensorFlow is large; this takes a few minutes once)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
  cp pyproject.toml "$stamp"
fi
