#!/usr/bin/env bash
# The main job on its embedded default: the whole pipeline on generated data with the tiny model
# (data lake -> GAN pretraining -> SSB pretraining -> alternating training -> online tuning +
# segmentation -> evaluation), tracked in a local MLflow store. Installs what it needs first.
#   bash scripts/main.sh [--config configs/demo.yaml] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python launch/demo.py "$@"
