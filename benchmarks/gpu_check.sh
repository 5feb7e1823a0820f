#!/usr/bin/env bash
# One GPU session's checks, at most ~8 minutes, results under $OUT (default ./gpu_check_out):
#   1. build gsasr_plugin.ops._C with CUDA; tests/test_rasterize_cuda.py (+ the CPU-kernel tests);
#      benchmarks/rasterize_sweep.py (CUDA vs pure path and vs the CPU kernel on large random cases, every footprint,
#      bf16 autocast, empty tiles, far-away Gaussians, batch vs loop); compute-sanitizer memcheck on a small case;
#   2. benchmarks/bench_rasterize.py --device cuda (48x48 x4 crop batch 16; 720x720 at x2, x4, x12; fwd, fwd+bwd);
#   3. benchmarks/bench_pipeline.py --full;
#   4. training step rate of GSASR-EDSR (options/train_gsasr_edsr.yml's network, 48x48 LR x4, batch 16).
# Every step has its own time limit and the script goes on after a failure; $OUT/summary.txt lists each step's
# exit status and time, $OUT/<step>.log its output.
#
#   OUT=/path/out bash benchmarks/gpu_check.sh [--device cuda|cpu] [--tiny] [--wheels DIR]
#
# --wheels DIR (default .whl): wheels of basicsr, lpips, mmengine, ... for a machine without them and without
# internet; installed with `pip install --no-index --no-deps --target /tmp/site DIR/*.whl` onto PYTHONPATH.
# --device cpu --tiny: a dry run on a CPU machine with tiny sizes (no CUDA build, no sanitizer).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/gpu_check_out}
DEVICE=cuda
TINY=0
WHEELS=$REPO/.whl
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --wheels) WHEELS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-470}  # seconds for all steps together

note() { echo "[$(date +%T) +$((SECONDS - START))s] $*" | tee -a "$SUMMARY"; }

# step NAME LIMIT CMD...: runs CMD with the smaller of LIMIT and the budget left, output to $OUT/NAME.log
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    note "$name skipped (time budget spent)"
    return
  fi
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "$name rc=$rc in $((SECONDS - t0))s (limit ${limit}s)$([ $rc -eq 124 ] && echo ' TIMED OUT')"
}

note "device $DEVICE, tiny $TINY, python $($PY -c 'import sys; print(sys.version.split()[0])'), torch $($PY -c 'import torch; print(torch.__version__, torch.version.cuda)' 2>&1)"
[ "$DEVICE" = cuda ] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.txt" 2>&1; nproc >> "$OUT/nvidia_smi.txt"; }

# --- dependencies from carried wheels ---------------------------------------------------------------------------
if ! $PY -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("basicsr", "lpips", "mmengine")))' 2>/dev/null; then
  if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl > "$OUT/wheels.log" 2>&1
    note "installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into /tmp/site (rc=$?)"
  else
    note "basicsr/lpips/mmengine missing and no wheels in $WHEELS: the pipeline and training steps will fail"
  fi
fi
export PYTHONPATH=/tmp/site:$REPO:$REPO/tests:${PYTHONPATH:-}

# --- 1. build and correctness -----------------------------------------------------------------------------------
# gsasr_plugin.ops is the top-level ops/ (setup.py's package_dir); in this scratch copy a link stands in for the
# install and build_ext --inplace puts _C next to the sources.
[ -e gsasr_plugin/ops ] || ln -s ../ops gsasr_plugin/ops
if [ "$DEVICE" = cuda ]; then
  step build 240 env GSASR_BUILD_EXT=1 GSASR_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    MAX_JOBS=${MAX_JOBS:-16} $PY setup.py -q build_ext --inplace
else
  step build 240 env GSASR_BUILD_EXT=1 GSASR_BUILD_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} $PY setup.py -q build_ext --inplace
fi
$PY -c "from gsasr_plugin.ops import cpu_op_available, cuda_op_available, rasterize
print('compiled op: CPU', cpu_op_available(), 'CUDA', cuda_op_available(), rasterize._import_error)" 2>&1 \
  | tee -a "$SUMMARY"

if [ "$DEVICE" = cuda ]; then
  step tests 150 $PY -m pytest -q -p no:cacheprovider tests/test_rasterize_cuda.py tests/test_rasterize_cpu.py
else
  step tests 150 $PY -m pytest -q -p no:cacheprovider tests/test_rasterize_cpu.py -k "float32 or batch or empty"
fi
SWEEP_ARGS=(--device "$DEVICE")
[ "$TINY" = 1 ] && SWEEP_ARGS+=(--tiny)
step sweep 120 $PY benchmarks/rasterize_sweep.py "${SWEEP_ARGS[@]}"

if [ "$DEVICE" = cuda ]; then
  if command -v compute-sanitizer > /dev/null; then
    cat > "$OUT/sanitizer_case.py" <<'EOF'
import torch
from gsasr_plugin.ops import rasterize_gaussians, use_backend
from rasterize_helpers import make
params = [p.cuda().requires_grad_() for p in make(2, 200, 3, (9, 7))]
opacities = torch.rand(2, 200, device='cuda', requires_grad=True)
with use_backend('compiled'):
    for kwargs in ({}, {'box_half_size': (1.0, 0.7)}, {'mode': 'gsplat_sum', 'opacities': opacities}):
        rasterize_gaussians(*params, (9, 7), (37, 29), **kwargs).square().sum().backward()
    rasterize_gaussians(*[p[:, :0] for p in params], (9, 7), (37, 29))  # no Gaussians
torch.cuda.synchronize()
print('sanitizer case done')
EOF
    step sanitizer 150 compute-sanitizer --tool memcheck --error-exitcode 3 $PY "$OUT/sanitizer_case.py"
  else
    note "compute-sanitizer not found: memcheck skipped"
  fi
fi

# --- 2. rasterizer benchmark ------------------------------------------------------------------------------------
if [ "$TINY" = 1 ]; then
  step bench_rasterize 120 $PY benchmarks/bench_rasterize.py --device "$DEVICE" --cases crop48_b1 --repeat 1 \
    --impls compiled torch --no-baselines
else
  step bench_rasterize 150 $PY benchmarks/bench_rasterize.py --device "$DEVICE" \
    --cases crop48_b16 out720_x2 out720_x4 out720_x12 --repeat 5 --impls compiled torch
fi

# --- 3. whole pipeline ------------------------------------------------------------------------------------------
if [ "$TINY" = 1 ]; then
  step bench_pipeline 120 $PY benchmarks/bench_pipeline.py --device "$DEVICE" --crop 48 --scales 4 --runs 1 \
    --warmup 0 --out "$OUT/bench_pipeline"
else
  step bench_pipeline 150 $PY benchmarks/bench_pipeline.py --full --device "$DEVICE" --out "$OUT/bench_pipeline"
fi

# --- 4. training step rate --------------------------------------------------------------------------------------
cat > "$OUT/train_rate.py" <<'EOF'
"""Training steps per second of options/train_gsasr_edsr.yml's network (48x48 LR x4 crops, Adam, L1)."""
import sys
import time

import torch
import yaml

device, tiny = sys.argv[1], sys.argv[2] == '1'
import gsasr_plugin  # noqa: F401 (registers the networks)
from basicsr.utils.registry import ARCH_REGISTRY

opt = yaml.safe_load(open('options/train_gsasr_edsr.yml'))['network_g']
batch, lq_size, steps = (2, 12, 2) if tiny else (16, 48, 10)
if tiny:
    opt.update(encoder=dict(type='EDSREncoder', num_feat=8, num_block=1), embed_dim=12, num_heads=2, window_size=4,
               num_blocks=1, num_layers_per_block=1)
net = ARCH_REGISTRY.get(opt.pop('type'))(**opt).to(device)
optim = torch.optim.Adam(net.parameters(), lr=2e-4)
lq = torch.rand(batch, 3, lq_size, lq_size, device=device)
gt = torch.rand(batch, 3, 4 * lq_size, 4 * lq_size, device=device)
for bf16 in (False, True):
    def one_step():
        optim.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = net(lq, scale=4.0)
            loss = (out.float() - gt).abs().mean()
        loss.backward()
        optim.step()
    one_step()
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device == 'cuda':
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    memory = f', peak {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB' if device == 'cuda' else ''
    print(f'GSASR-EDSR train step, batch {batch}, {lq_size}x{lq_size} LR x4, bf16 {bf16}: '
          f'{seconds * 1e3:.0f} ms/step, {1 / seconds:.2f} steps/s{memory}', flush=True)
EOF
step train_rate 90 $PY "$OUT/train_rate.py" "$DEVICE" "$TINY"

[ -L gsasr_plugin/ops ] && rm gsasr_plugin/ops
note "done in $((SECONDS - START))s; logs in $OUT"
for name in build tests sweep sanitizer bench_rasterize bench_pipeline train_rate; do
  [ -f "$OUT/$name.log" ] && { echo "===== $name (last lines)"; tail -n 25 "$OUT/$name.log"; }
done >> "$SUMMARY"
exit 0
