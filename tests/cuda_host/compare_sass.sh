#!/usr/bin/env bash
# Compiles the kernels of ops/csrc/rasterize.cu at two revisions with nvcc (setup.py's device flags) and compares
# their SASS: a change that is meant to leave the CUDA build alone (the host-build macros) must print "identical".
#   bash tests/cuda_host/compare_sass.sh [REV_A] [REV_B]   (default: main and the work tree; REV_B may be "work")
# Needs nvcc (CUDA_HOME, default /usr/local/cuda), torch's headers (PYTHON, default .venv/bin/python) and cuobjdump
# (CUOBJDUMP; the toolkit's, or the copy triton ships in the venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
REV_A=${1:-main}
REV_B=${2:-work}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
PYTHON=${PYTHON:-.venv/bin/python}
ARCHS=${ARCHS:-"80 90"}
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || ls "$CUDA_HOME/bin/cuobjdump" 2>/dev/null \
  || find .venv -path '*nvidia/bin/cuobjdump' 2>/dev/null | head -1)}
[ -x "$CUOBJDUMP" ] || { echo "no cuobjdump found: set CUOBJDUMP" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
includes=$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths
print(' '.join('-I' + p for p in include_paths()))" 2>/dev/null)
for rev in "$REV_A" "$REV_B"; do
  src="$out/$rev/csrc"
  mkdir -p "$src"
  if [ "$rev" = work ]; then
    cp ops/csrc/* "$src/"
  else
    git archive "$rev" ops/csrc | tar -x -C "$out/$rev" --strip-components=1
  fi
  for arch in $ARCHS; do
    # shellcheck disable=SC2086
    "$CUDA_HOME/bin/nvcc" -cubin -std=c++20 -O3 --use_fast_math -lineinfo -gencode "arch=compute_$arch,code=sm_$arch" \
      --expt-relaxed-constexpr -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
      -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ $includes \
      -o "$out/$rev/sm_$arch.cubin" "$src/rasterize.cu"
    # the anonymous namespace's mangled name carries a hash of the file: normalise it
    "$CUOBJDUMP" -sass "$out/$rev/sm_$arch.cubin" | grep -v '^\s*$' | sed 's/_GLOBAL__N__[0-9a-f]*_/_GLOBAL__N__/g' \
      > "$out/$rev/sm_$arch.sass"
  done
done
status=0
for arch in $ARCHS; do
  kernels=$(grep -c 'Function :' "$out/$REV_A/sm_$arch.sass" || true)
  lines=$(wc -l < "$out/$REV_A/sm_$arch.sass")
  if diff -q "$out/$REV_A/sm_$arch.sass" "$out/$REV_B/sm_$arch.sass" > /dev/null; then
    echo "sm_$arch: SASS identical ($kernels kernels, $lines lines) between $REV_A and $REV_B"
  else
    echo "sm_$arch: SASS DIFFERS between $REV_A and $REV_B:"
    diff "$out/$REV_A/sm_$arch.sass" "$out/$REV_B/sm_$arch.sass" | head -20 || true
    status=1
  fi
done
exit $status
