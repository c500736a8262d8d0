#!/usr/bin/env bash
# The Triton kernel tests under the oldest Triton the [gpu] extra allows, 3.6 (also the lent GPU image's;
# CI pins 3.9): its interpreter on every kernel test, and its own compile of every kernel for sm_80/sm_90.
#
#   tests/ops/triton/run_oldest.sh [pytest args...]
#
# Creates ${MFT_TRITON_OLDEST_ENV:-$HOME/.cache/mft-triton36-env} once: a venv over this environment's
# site-packages (the installed torch and mft_engine) with triton==3.6.0 and numpy<2.4 on top — Triton
# 3.6's interpreter turns one-element arrays into ints with int(), which numpy 2.4 refuses (3.9 squeezes
# first), so under numpy 2.4 every kernel test fails inside the interpreter, not in a kernel. Then runs
# tests/ops/triton with this checkout first on the path. Not part of .ci/run (a 190 MB wheel).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
ENV=${MFT_TRITON_OLDEST_ENV:-$HOME/.cache/mft-triton36-env}
TRITON_VERSION=3.6.0
if [ ! -x "$ENV/bin/python" ]; then
  python -m venv --system-site-packages "$ENV"
  "$ENV/bin/python" -m pip install -q --no-deps "triton==$TRITON_VERSION" "numpy<2.4"
fi
"$ENV/bin/python" -c "import triton, sys; v = triton.__version__; print('triton', v); sys.exit(v != '$TRITON_VERSION')"
cd "$REPO"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$ENV/bin/python" -m pytest -q -p no:cacheprovider tests/ops/triton "$@"
