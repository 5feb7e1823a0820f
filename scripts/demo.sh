#!/usr/bin/env bash
# The demo on a fresh machine: sets up ./.venv, writes photos that ship with scikit-image to ./demo_data,
# trains a small GSASR on the CPU (options/train_gsasr_demo.yml; validation at x2, x3.5, x4 against
# bicubic is logged), then super-resolves one validation photo by x3.5 into ./demo_output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh

.venv/bin/python -m gsasr_plugin.demo write-data demo_data
.venv/bin/basicsr train -opt options/train_gsasr_demo.yml
.venv/bin/python -m gsasr_plugin.demo upscale -opt options/train_gsasr_demo.yml \
  --input demo_data/val/chelsea.png --scale 3.5 --output demo_output/chelsea_x3.5.png
echo "Validation metrics (model [bicubic]) per scale: see the last 'Validation' block of"
echo "  $(ls -t experiments/train_GSASR_demo/train_train_GSASR_demo_*.log | head -1)"
