#!/usr/bin/env bash
# Sets up ./.venv (scripts/setup_env.sh, which builds the rasterizer's CPU kernel; here a failed build is an
# error and the tests insist on the kernel), checks that the CUDA rasterizer compiles where nvcc exists,
# and runs the test suite. Run again, it installs and compiles only what changed since (a clean clone, as in CI,
# builds everything). Extra arguments go to pytest, e.g. `bash scripts/test.sh -k rasterize`.
# The browser test (tests/test_app_browser.py) needs Debian's chromium (`apt-get install chromium`; .ci/run
# installs it); without one it fails, unless GSASR_NO_BROWSER=1 says to skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
export GSASR_BUILD_EXT=${GSASR_BUILD_EXT:-1} GSASR_REQUIRE_KERNEL=${GSASR_REQUIRE_KERNEL:-1}
bash scripts/setup_env.sh

export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
if [ -x "$CUDA_HOME/bin/nvcc" ]; then
  # a compile check: one architecture shows that the kernel compiles; both where a GPU could run them
  if nvidia-smi -L >/dev/null 2>&1; then DEFAULT_ARCHS="8.0;9.0"; else DEFAULT_ARCHS="8.0"; fi
  ARCHS="${TORCH_CUDA_ARCH_LIST:-$DEFAULT_ARCHS}"
  # compiled again only when the sources, the build script, torch, nvcc or the architectures changed
  WANT=$( { echo "$ARCHS"; "$CUDA_HOME/bin/nvcc" --version; .venv/bin/python -c 'import torch; print(torch.__version__)'
            cat setup.py ops/csrc/*; } | sha256sum | cut -d' ' -f1)
  STAMP=build/cuda_check/stamp
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && ls build/cuda_check/lib/gsasr_plugin/ops/_C*.so >/dev/null 2>&1
  then
    echo "The CUDA rasterizer compiled before from these sources (build/cuda_check): not compiling it again."
  else
    echo "Compiling the CUDA rasterizer (compile only, into build/cuda_check) ..."
    rm -rf build/cuda_check
    GSASR_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCHS" MAX_JOBS=${MAX_JOBS:-2} \
      .venv/bin/python setup.py -q build_ext --build-temp build/cuda_check/tmp --build-lib build/cuda_check/lib
    ls build/cuda_check/lib/gsasr_plugin/ops/_C*.so
    echo "$WANT" > "$STAMP"
  fi
else
  echo "No nvcc under CUDA_HOME=$CUDA_HOME: skipping the CUDA compile check."
fi

if ! command -v "${GSASR_CHROMIUM:-chromium}" >/dev/null 2>&1 && [ "${GSASR_NO_BROWSER:-0}" != 1 ]; then
  echo "No chromium here: tests/test_app_browser.py will fail (apt-get install chromium, or GSASR_NO_BROWSER=1)."
fi
.venv/bin/python -m pytest -q tests "$@"
