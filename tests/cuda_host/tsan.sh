#!/usr/bin/env bash
# The host-executed CUDA kernels under ThreadSanitizer: one OS thread per CUDA thread, mutex/condition-variable
# barriers and warp exchanges, the kernels and the layer compiled with -fsanitize=thread (tsan_run.py says what
# runs). Prints ThreadSanitizer's reports, if any, and exits non-zero on a race or a wrong result.
#   bash tests/cuda_host/tsan.sh                       (GSASR_CUDA_HOST_CSRC=<copy of ops/csrc> for a mutant)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
libtsan=$(${CXX:-c++} -print-file-name=libtsan.so)
[ -e "$libtsan" ] || { echo "no libtsan.so for ${CXX:-c++}" >&2; exit 2; }
# halt_on_error=0: report every race; exitcode 66 when any was reported
TSAN_OPTIONS="halt_on_error=0 exitcode=66 ${TSAN_OPTIONS:-}" LD_PRELOAD="$libtsan" OMP_NUM_THREADS=1 \
  "$PYTHON" tests/cuda_host/tsan_run.py
