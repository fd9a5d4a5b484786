#!/usr/bin/env bash
# The test suite, slow multi-process tests included. Installs what it needs first.
#   bash scripts/test.sh                 # everything (what CI runs)
#   bash scripts/test.sh -m "not slow"   # the fast part, while developing
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --durations=30 "$@"
