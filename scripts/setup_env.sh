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
# shellcheck disable=SC2086
$PIP install -q $TORCH_PACKAGES
# basicsr 1.4.2 is an sdist whose build imports torch: build it against the torch installed above.
$PIP install -q --no-build-isolation basicsr==1.4.2
$PIP install -q --no-build-isolation -e ".[test]"
.venv/bin/python -c "import gsasr_plugin, basicsr; print('gsasr_plugin', gsasr_plugin.__version__, '| basicsr', basicsr.__version__)"
