#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in .venv with the pinned stack and mtsys
# installed in editable mode. Idempotent: reinstalls only when requirements.txt or
# pyproject.toml changed. Usage: bash bin/setup_env.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-${PYTHON:-python3}}
# Graphviz's `dot` draws the inspector's pictures (bin/inspect_system.py graph/flow; its tests
# need it). Installed when missing and we can (root with apt-get); otherwise a note says how.
if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Graphviz (apt-get install graphviz)..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz; } >&2
  else
    echo "Note: Graphviz's dot is missing; install it (sudo apt-get install graphviz) to draw" \
      "pictures with bin/inspect_system.py and to run tests/inspect." >&2
  fi
fi
# Debian's Chromium renders the HTML report headless in tests/inspect/test_report.py (which
# fails without it). Same rule: installed when missing and we can, otherwise a note.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Chromium (apt-get install chromium)..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2
  else
    echo "Note: Chromium is missing; install it (sudo apt-get install chromium) to run" \
      "tests/inspect/test_report.py." >&2
  fi
fi
stamp=.venv/.mtsys-requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  exit 0
fi
echo "Setting up .venv (pinned TensorFlow/Keras stack; a few minutes the first time)..." >&2
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip >&2
.venv/bin/python -m pip install --quiet -r requirements.txt >&2
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . >&2
echo "$want" >"$stamp"
echo ".venv ready." >&2
