#!/usr/bin/env bash
# Creates ./.venv and installs torch, basicsr 1.4.2 and this package (editable, with test tools).
# Safe to run again: it only installs what is missing.
# TORCH_PACKAGES overrides the torch pin, e.g. TORCH_PACKAGES="torch torchvision" for your own CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PACKAGES=${TORCH_PACKAGES:-"torch==2.14.1 torchvision==0.29.1"}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
# PEP 660 editable installs without build isolation need a setuptools that builds wheels itself (>= 70.1)
$PIP install -q "setuptools>=70.1" wheel
# shellcheck disable=SC2086
$PIP install -q $TORCH_PACKAGES
# basicsr 1.4.2 is an sdist whose build imports torch: build it against the torch installed above.
$PIP install -q --no-build-isolation basicsr==1.4.2
# builds the rasterizer extension gsasr_plugin.ops._C (CPU kernel; + CUDA where available) against that torch
MAX_JOBS=${MAX_JOBS:-2} $PIP install -q --no-build-isolation -e ".[test]"
.venv/bin/python -c "import gsasr_plugin, basicsr; from gsasr_plugin.ops import cpu_op_available, cuda_op_available; \
print('gsasr_plugin', gsasr_plugin.__version__, '| basicsr', basicsr.__version__, \
      '| compiled rasterizer: CPU', cpu_op_available(), 'CUDA', cuda_op_available())"
