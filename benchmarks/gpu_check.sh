#!/usr/bin/env bash
# One-command GPU verification of dsp_monai's CUDA kernels, for a machine with torch, nvcc, ninja, pytest, numpy
# and scipy but without MONAI and without internet:
#
#     bash benchmarks/gpu_check.sh OUTDIR        (or: make gpu-check GPU_CHECK_OUT=OUTDIR)
#
# 1. builds the extension from source with this machine's torch (FORCE_CUDA=1, the visible GPU's architecture),
# 2. runs the cuda-marked tests (CPU vs CUDA agreement of both operator families, gradients, float16 / bfloat16,
#    benchmark-size and 3D inputs, non-contiguous inputs),
# 3. runs the GPU benchmarks: prototype_logsumexp fused vs straightforward vs torch.compile (B=8, 512x512, float32
#    and bfloat16) against the memory-traffic floor, the complete DSP loss, geodesic / Euclidean distance maps
#    (8 x 512x512 and a 3D volume),
# and writes ONE Markdown report, OUTDIR/gpu_check.md (stage logs next to it). Every stage has a time limit; the
# whole check is meant to take under 8 minutes. MONAI is hidden from every Python process of the check (a stub
# package that raises ImportError), so the check proves that nothing on its path needs it.
# Without a visible GPU it is a dry run: a CPU-only build, the cuda-marked tests collected and skipped, and the
# CUDA benchmarks skipped, each with a line saying so. PYTHON selects the interpreter (default python3).
set -u -o pipefail

if [ $# -ne 1 ]; then
  echo "usage: bash benchmarks/gpu_check.sh OUTDIR" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$ROOT"

mkdir -p "$WORK/hide/monai" "$OUT/logs"
echo 'raise ImportError("MONAI is hidden by benchmarks/gpu_check.sh: nothing on the GPU check path may need it")' \
  > "$WORK/hide/monai/__init__.py"
export PYTHONPATH="$WORK/hide:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
: > "$WORK/stages.tsv"

# stage NAME LIMIT_SECONDS COMMAND...: runs COMMAND with a time limit, its output in OUTDIR/logs/NAME.log.
stage() {
  local name=$1 limit=$2 start=$SECONDS status
  shift 2
  echo "== $name (limit ${limit} s)"
  if timeout "$limit" "$@" > "$OUT/logs/$name.log" 2>&1; then
    status=ok
  else
    local code=$?
    status="failed (exit $code)"
    [ "$code" -eq 124 ] && status="timed out after ${limit} s"
  fi
  printf '%s\t%s\t%d\t%s\n' "$name" "$status" "$((SECONDS - start))" "$OUT/logs/$name.log" >> "$WORK/stages.tsv"
  echo "   $status"
}

skip() {  # skip NAME REASON
  echo "$2" > "$OUT/logs/$1.log"
  echo "$2" > "$WORK/$1.section.md"
  printf '%s\tskipped\t0\t%s\n' "$1" "$OUT/logs/$1.log" >> "$WORK/stages.tsv"
  echo "== $1: $2"
}

GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$GPU" = 1 ]; then
  stage build 360 env FORCE_CUDA=1 "$PY" setup.py --quiet build_ext --inplace
else
  echo "No GPU visible to torch: dry run (CPU-only build; CUDA tests and benchmarks skipped)." \
    > "$WORK/build.section.md"
  stage build 600 env FORCE_CUDA=0 "$PY" setup.py --quiet build_ext --inplace
fi
"$PY" benchmarks/gpu_check.py environment > "$WORK/environment.md" 2> "$OUT/logs/environment.log" \
  || echo "- environment: could not be described (see logs/environment.log)" > "$WORK/environment.md"

stage cuda_tests 240 "$PY" -m pytest -m cuda tests/ops -q -rs -p no:cacheprovider
{
  if [ "$GPU" = 1 ]; then echo "\`python -m pytest -m cuda tests/ops\`:"; else
    echo "Dry run: the cuda-marked tests are collected (their imports work without MONAI) and skipped:"; fi
  echo
  grep -E "^(SKIPPED|FAILED|ERROR)" "$OUT/logs/cuda_tests.log" | sed 's/^/    /' | head -40
  echo
  echo "Summary: $(tail -n 1 "$OUT/logs/cuda_tests.log")"
} > "$WORK/cuda_tests.section.md"

stage prototype_logsumexp_bench 240 "$PY" benchmarks/bench_prototype_logsumexp.py --device cuda --repeats 5 \
  --output "$WORK/prototype_logsumexp_bench.section.md"

if [ "$GPU" = 1 ]; then
  stage dsp_loss_bench 120 "$PY" benchmarks/bench_dsp_loss.py --device cuda --threads 1 --repeats 11 \
    --baseline-repeats 3 --no-write
  { echo '```'; cat "$OUT/logs/dsp_loss_bench.log"; echo '```'; } > "$WORK/dsp_loss_bench.section.md"
else
  skip dsp_loss_bench "Skipped: no GPU visible (the complete DSP loss benchmark runs with --device cuda)."
fi

stage geodesic_bench 120 "$PY" benchmarks/gpu_check.py geodesic
[ -s "$OUT/logs/geodesic_bench.log" ] && grep -v ': [0-9.]* s$' "$OUT/logs/geodesic_bench.log" \
  > "$WORK/geodesic_bench.section.md"

stage no_monai_imported 60 "$PY" -c "
import sys, dsp_monai.ops, dsp_monai.annotations, dsp_monai.losses
assert not any(m == 'monai' or m.startswith('monai.') for m in sys.modules), 'monai was imported'
print('dsp_monai.ops, dsp_monai.annotations and dsp_monai.losses import without MONAI')"
cp "$OUT/logs/no_monai_imported.log" "$WORK/no_monai_imported.section.md"

"$PY" benchmarks/gpu_check.py report "$WORK" "$OUT/gpu_check.md"
echo "Report: $OUT/gpu_check.md (record it in benchmarks/RESULTS.md: $PY benchmarks/gpu_check.py record $OUT/gpu_check.md)"
awk -F '\t' '$2 != "ok" && $2 != "skipped" { bad = 1 } END { exit bad }' "$WORK/stages.tsv"
