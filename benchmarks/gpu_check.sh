#!/usr/bin/env bash
# One call measures everything the GPU path needs, the first time a CUDA machine is at hand:
#   1. environment (GPU, driver, torch, triton)         4. the encoder end to end: Triton vs SDPA vs terratorch
#   2. the kernel tests on CUDA                          5. a UDF over a real Sentinel-2 tile on the GPU
#   3. benchmarks/bench_attention.py
# Every figure goes to one file (RESULTS.txt, plus RESULTS.jsonl for the encoder and UDF rows); each step
# has its own time limit so the whole stays within 8 minutes after the install.
#
#   benchmarks/gpu_check.sh [--out DIR] [--python PY] [--data DIR] [--dry-run]
#
# --python PY: an interpreter whose environment already has the project's [test] extra and a CUDA torch
#   (default: a fresh .gpu-venv in the checkout, installed with CUDA torch, ".[test]" and terratorch).
# --data DIR: the sample data folder (default ../shared/data beside the checkout).
# --dry-run: the same steps on the CPU, without installing (this shell's python): the Triton kernels under
#   TRITON_INTERPRET=1, toy sizes; checks the script's logic, measures nothing worth reading.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

out="gpu-check-$(date +%Y%m%d-%H%M%S)"
python_bin=""
data="../shared/data"
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --python) python_bin="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
results="$out/RESULTS.txt"
jsonl="$out/RESULTS.jsonl"
: > "$results"
: > "$jsonl"
failed=()
started=$(date +%s)

note() { echo "$*" | tee -a "$results"; }

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit (scaled in a dry run: the interpreter on a
# shared CPU is slow), its output into RESULTS.txt
limit_scale=1
step() {
  local name="$1" limit=$(( $2 * limit_scale ))
  shift 2
  note ""
  note "=== $name (limit ${limit}s) ==="
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$results"
  rc=${PIPESTATUS[0]}
  note "--- $name: exit $rc in $(( $(date +%s) - t0 ))s"
  [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
}

if [ "$dry_run" -eq 1 ]; then
  python_bin=${python_bin:-python}
  limit_scale=${GPU_CHECK_DRY_RUN_LIMIT_SCALE:-6}
  export TRITON_INTERPRET=1
  device=cpu; dtype=float32; size=tiny; px=16; batch=1; udf_px=32; udf_model=terramind_v1_tiny
  kernel_tests=(tests/kernels/test_dispatch.py tests/kernels/test_triton_path.py -k "not blocks_with")
  attention_args=(--smoke)
  note "gpu_check DRY RUN on the CPU (TRITON_INTERPRET=1, toy sizes): the figures below mean nothing"
else
  device=cuda; dtype=bfloat16; size=base; px=224; batch=16; udf_px=0; udf_model=terramind_v1_base
  kernel_tests=(tests/kernels)
  attention_args=(--quick)
  export TRITON_INTERPRET=0
  if [ -z "$python_bin" ]; then
    t0=$(date +%s)
    if [ ! -x .gpu-venv/bin/python ]; then
      python3 -m venv .gpu-venv || { echo "cannot create .gpu-venv" >&2; exit 1; }
    fi
    python_bin=.gpu-venv/bin/python
    {
      "$python_bin" -m pip install -q --upgrade pip &&
      "$python_bin" -m pip install -q torch &&  # PyPI's Linux wheels carry CUDA
      "$python_bin" -m pip install -q -e ".[test]" &&
      "$python_bin" -m pip install -q --no-deps "terratorch==1.2.*"
    } 2>&1 | tail -n 20 | tee -a "$results"
    note "install: $(( $(date +%s) - t0 ))s"
  fi
fi

# 1. environment
step "environment" 120 bash -c "
  date -u +'%Y-%m-%dT%H:%M:%SZ'; git -C '$repo' log --oneline -1 2>/dev/null
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  '$python_bin' - <<'EOF'
import platform, torch
print('python', platform.python_version(), '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| device available:', torch.cuda.is_available())
if torch.cuda.is_available():
    print('GPU', torch.cuda.get_device_name(0), 'capability', torch.cuda.get_device_capability(0))
try:
    import triton
    print('triton', triton.__version__)
except ImportError:
    print('triton: not installed')
EOF"
if [ "$dry_run" -eq 0 ] && ! "$python_bin" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  note "no CUDA device visible to $python_bin: stopping (use --dry-run to check the script on a CPU)"
  exit 1
fi

# 2. the kernel tests, on CUDA (the interpreter in a dry run)
step "kernel tests" 150 "$python_bin" -m pytest -q -p no:cacheprovider "${kernel_tests[@]}"

# 3. the attention kernel against SDPA, and the glue kernels
step "bench_attention" 150 "$python_bin" benchmarks/bench_attention.py "${attention_args[@]}"

# 4. the encoder end to end
reference=()
"$python_bin" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('terratorch') is None)" \
  || { reference=(--no-reference); note "(terratorch not installed: no reference row)"; }
step "encoder end to end ($dtype)" 120 "$python_bin" benchmarks/gpu_encoder.py --device "$device" --dtype "$dtype" \
  --size "$size" --px "$px" --batch "$batch" --repeats 5 --warmup 1 --json "$jsonl" "${reference[@]}"

# 5. a UDF over a real tile
tile=$(ls "$data"/terramind-examples/S2L2A/*.tif 2>/dev/null | head -n 1)
if [ -n "$tile" ]; then
  step "UDF on a real tile" 120 "$python_bin" benchmarks/gpu_udf.py "$tile" --device "$device" --model "$udf_model" \
    --px "$udf_px" --repeats 2 --json "$jsonl"
else
  note ""; note "=== UDF on a real tile: skipped, no tile under $data/terramind-examples/S2L2A ==="
  failed+=("UDF on a real tile (no data)")
fi

note ""
note "=== summary: $(( $(date +%s) - started ))s in all; results in $results and $jsonl ==="
if [ ${#failed[@]} -gt 0 ]; then
  note "FAILED: ${failed[*]}"
  exit 1
fi
note "all steps passed"
