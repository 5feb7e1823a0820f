#!/usr/bin/env bash
# Creates ./.venv and installs torch, basicsr 1.4.2 and this package (editable, with test tools).
# Safe to run again: when nothing it installs from has changed since its last run here (the torch pin, setup.py,
# pyproject.toml, the version, ops/csrc/, the GSASR_BUILD_* choices, this script; stamp in .venv/), it installs and
# compiles nothing. GSASR_FORCE_SETUP=1 reinstalls anyway. A clean checkout (CI) has no .venv: everything is built.
# TORCH_PACKAGES overrides the torch pin, e.g. TORCH_PACKAGES="torch torchvision" for your own CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PACKAGES=${TORCH_PACKAGES:-"torch==2.14.1 torchvision==0.29.1"}

# The default torch pin is a CUDA build of about 5.6 GB in .venv: a disk that cannot hold it fails late, with
# pip's "No space left on device" half way through. Say so first, in one line (GSASR_MIN_FREE_GB=0 skips this).
if ! { [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; }; then
  NEED_GB=${GSASR_MIN_FREE_GB:-8}
  FREE_GB=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$FREE_GB" -lt "$NEED_GB" ]; then
    echo "setup_env: error: $(pwd)/.venv: $FREE_GB GB free on its disk, installing $TORCH_PACKAGES needs about" \
         "$NEED_GB GB (free space, or GSASR_MIN_FREE_GB=<GB> to try with less)" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
STAMP=.venv/gsasr_setup.stamp
# what the installed environment depends on: sources of the build, the pins, the build choices
inputs_hash() {
  {
    # GSASR_BUILD_EXT=1 only makes a failed build an error: checked below on the installed op, not hashed
    local ext=${GSASR_BUILD_EXT:-}
    [ "$ext" = 1 ] && ext=
    echo "$TORCH_PACKAGES|ext=$ext|cuda=${GSASR_BUILD_CUDA:-}|${TORCH_CUDA_ARCH_LIST:-}|${CUDA_HOME:-}"
    .venv/bin/python -c 'import sys; print(sys.version)'
    grep -h '^__version__' gsasr_plugin/__init__.py
    cat scripts/setup_env.sh setup.py pyproject.toml ops/csrc/*
  } | sha256sum | cut -d' ' -f1
}
WANT=$(inputs_hash)
if [ "${GSASR_FORCE_SETUP:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
    && .venv/bin/python -c "import gsasr_plugin, basicsr; from gsasr_plugin.ops import cpu_op_available as ok; \
import os, sys; sys.exit(os.environ.get('GSASR_BUILD_EXT') == '1' and not ok())" 2>/dev/null; then
  echo "setup_env: .venv is up to date (nothing to install or compile; GSASR_FORCE_SETUP=1 redoes it)"
  exit 0
fi
rm -f "$STAMP"
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
echo "$WANT" > "$STAMP"
