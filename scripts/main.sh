#!/usr/bin/env bash
# The main job on its embedded default: generated sample data in every official layout ->
# data lake (shards + catalog) -> validation -> a few loader batches. Installs what it needs first.
#   bash scripts/main.sh [--config configs/main.yaml] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python launch/main.py "$@"
