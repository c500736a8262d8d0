#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (issue 16). Run from the repository root:
#   OUT=gpu_out scripts/gpu_check.sh
# Builds the extension against the machine's torch, runs the CUDA op tests (Triton compiled, not
# interpreted) and the torch.compile test on CUDA, the three benchmarks on the device, `mft run` on cuda and
# on cpu (counts, mask Jaccard, and the identical mask from one saved state) and validate-scorer on cuda
# (params/s; ΔL against the CPU's on the same 50 items). Every step writes to $OUT and the script goes on
# when one fails; summary.txt lists each step's exit status. Nothing is downloaded: random-weight models
# only. Issue 21: `mft run` and a Woodbury fit with two gloo ranks sharing the GPU. Budget: about
# 10 minutes on one H100.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$OUT/summary.txt"
  return $rc
}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
  > "$OUT/versions.txt" 2>&1
git log --oneline -1 >> "$OUT/versions.txt" 2>/dev/null
step build 300 pip install --no-build-isolation --no-deps -e . || { tail -30 "$OUT/build.err"; exit 1; }
step info 60 mft info
step pytest_cuda 240 python -m pytest -q -x -p no:cacheprovider tests/gpu tests/ops/triton/test_torch_compile.py
step bench_zeroing 120 mft bench zeroing --model bert-base-random --device cuda --repeats 5 --json
step bench_collect 150 mft bench collect --model bert-base-random --samples 512 --device cuda --json
step bench_hvp 120 mft bench hvp --model bert-base-random --samples 64 --device cuda --json
RUN=(run --model bert-base-random --samples 256 --eval-mode --save-state --no-control --quiet)
step run_cuda 150 mft "${RUN[@]}" --device cuda --out "$OUT/run_cuda"
step run_cpu 300 mft "${RUN[@]}" --device cpu --out "$OUT/run_cpu"
CPU_STATE=$(ls -d "$OUT"/run_cpu/mft_*/gradient_state.safetensors 2>/dev/null | head -1)
[ -n "$CPU_STATE" ] && step run_cuda_from_cpu_state 120 mft "${RUN[@]}" --device cuda --state "$CPU_STATE" \
  --out "$OUT/run_cuda_state"
# issue 21: two gloo ranks sharing the one GPU (NCCL cannot place two ranks on one device), against the
# one-process CUDA run above (the same mask up to the stated tolerance)
step run_cuda_2gloo 240 torchrun --standalone --nproc-per-node 2 -m mft_engine.cli "${RUN[@]}" --device cuda:0 \
  --dist-backend gloo --out "$OUT/run_cuda_2gloo"
step fit_influence_cuda_2gloo 240 torchrun --standalone --nproc-per-node 2 -m mft_engine.cli fit-influence \
  --model bert-base-random --samples 64 --solver woodbury --device cuda:0 --dist-backend gloo --quiet --json \
  --fits-dir "$OUT/fits_2gloo"
VS=(validate-scorer --model bert-base-random --samples 64 --scorers gradient --held-out none --damping-sweep ""
    --no-additivity --quiet)
step validate_cuda_1000 240 mft "${VS[@]}" --n-params 1000 --device cuda --out "$OUT/vs_cuda_1000"
step validate_cuda_50 120 mft "${VS[@]}" --n-params 50 --device cuda --out "$OUT/vs_cuda_50"
step validate_cpu_50 240 mft "${VS[@]}" --n-params 50 --device cpu --out "$OUT/vs_cpu_50"
python - "$OUT" > "$OUT/compare.txt" 2>&1 <<'PY'
import csv, glob, json, sys
from safetensors.torch import load_file
out = sys.argv[1]
def one(pattern):
    found = glob.glob(f"{out}/{pattern}")
    return found[0] if found else None
def mask(folder):
    return set(load_file(glob.glob(f"{folder}/mask*.safetensors")[0])["indices"].tolist())
cuda, cpu, state = one("run_cuda/mft_*"), one("run_cpu/mft_*"), one("run_cuda_state/mft_*")
if cuda and cpu:
    rc, rg = (json.load(open(f"{d}/results.json")) for d in (cpu, cuda))
    a, b = mask(cpu), mask(cuda)
    print("run counts cpu", rc["counts"]["detrimental_total"], "cuda", rg["counts"]["detrimental_total"],
          "jaccard", len(a & b) / max(len(a | b), 1))
    print("run device", rg["device"], "zero_s", [f["zero_s"] for f in rg["fractions"]],
          "read_bound_s", [f["read_bound_s"] for f in rg["fractions"]])
two = one("run_cuda_2gloo/mft_*")
if cuda and two:
    a, b = mask(cuda), mask(two)
    print("run cuda: 1 process vs 2 gloo ranks on one GPU: jaccard", len(a & b) / max(len(a | b), 1),
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
cat "$OUT/summary.txt" "$OUT/compare.txt"
