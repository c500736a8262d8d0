"""Robustness to noisy text: character and word corruption, a clean-trained model tested on corrupted
validation texts at several noise levels, and noise-augmented training tested the same way.

Corruption functions are pure: `f(text, level, seed) -> str`, the same arguments giving the same text on
every machine (`random.Random(seed)`, string seeds hashed with SHA-512 by Python). `level` in [0, 1] is the
share of the text's units that are changed, rounded half up: units are words (emoji insertion, word
deletion and substitution), letters (character substitution and deletion) or adjacent word pairs (word
swap). Level 0 returns the text unchanged; level 1 changes every unit.

The study (`run_noise`) trains on clean rows, then evaluates the same model on the validation split with
every kind at every level (the corrupted texts are drawn once per kind, level and row, so both models
see the same ones); with --augment a second model trains on the same rows where a seeded share of the
texts is corrupted, and is evaluated on the same noisy sets. Writes results/noise_<timestamp>/:
results.json, noise.csv, summary.txt, accuracy_vs_noise.png, logs/run.log.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import help_field
from ..data import TaskData
from ..errors import ConfigError
from ..report import ResultsFolder
from ..report.plots import pyplot
from ..report.progress import Progress
from .trials import (
    Bench,
    StudyConfig,
    StudyOutput,
    Timer,
    base_record,
    flat_metrics,
    halves_metrics,
    parse_float_list,
    parse_names,
    run_trial,
    table_text,
    trial_record,
    write_table,
)

log = logging.getLogger("mft_engine")

EMOJIS = ("😀", "😂", "😍", "🙄", "😭", "👍", "👎", "🔥", "💯", "🎬", "🍿", "✨", "🤔", "😡")
#: substitutes of `substitute_words`: frequent words without sentiment, so substitution removes meaning
#: without adding the opposite label's cue
NEUTRAL_WORDS = ("thing", "stuff", "it", "this", "that", "some", "one", "way", "there", "here", "then",
                 "people", "time", "part", "kind", "place")

Seed = int | str


def _check_level(level: float) -> float:
    level = float(level)
    if math.isnan(level) or not 0.0 <= level <= 1.0:
        raise ConfigError(f"noise level {level} is outside [0, 1]")
    return level


def units_changed(level: float, n: int) -> int:
    """How many of `n` units a noise level changes: round(level · n), halves rounded up."""
    return math.floor(_check_level(level) * n + 0.5)


def insert_emoji(text: str, level: float, seed: Seed = 0) -> str:
    """Insert round(level · words) emojis, each after a different word (seeded positions and emojis)."""
    words = text.split()
    k = units_changed(level, len(words))
    if k == 0:
        return text
    rng = random.Random(seed)
    after = set(rng.sample(range(len(words)), k))
    out = []
    for i, w in enumerate(words):
        out.append(w)
        if i in after:
            out.append(rng.choice(EMOJIS))
    return " ".join(out)


def substitute_chars(text: str, level: float, seed: Seed = 0) -> str:
    """Replace round(level · letters) letters, each by a different ASCII letter of the same case."""
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    k = units_changed(level, len(letters))
    if k == 0:
        return text
    rng = random.Random(seed)
    chars = list(text)
    for i in sorted(rng.sample(letters, k)):
        pool = string.ascii_uppercase if chars[i].isupper() else string.ascii_lowercase
        chars[i] = rng.choice([c for c in pool if c != chars[i]])
    return "".join(chars)


def delete_chars(text: str, level: float, seed: Seed = 0) -> str:
    """Delete round(level · letters) letters (other characters stay)."""
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    k = units_changed(level, len(letters))
    if k == 0:
        return text
    gone = set(random.Random(seed).sample(letters, k))
    return "".join(c for i, c in enumerate(text) if i not in gone)


def delete_words(text: str, level: float, seed: Seed = 0) -> str:
    """Delete round(level · words) words (level 1 leaves an empty text)."""
    words = text.split()
    k = units_changed(level, len(words))
    if k == 0:
        return text
    gone = set(random.Random(seed).sample(range(len(words)), k))
    return " ".join(w for i, w in enumerate(words) if i not in gone)


def substitute_words(text: str, level: float, seed: Seed = 0, vocabulary: Sequence[str] = NEUTRAL_WORDS) -> str:
    """Replace round(level · words) words, each by a different word of `vocabulary` (default: neutral words)."""
    words = text.split()
    k = units_changed(level, len(words))
    if k == 0:
        return text
    rng = random.Random(seed)
    for i in sorted(rng.sample(range(len(words)), k)):
        words[i] = rng.choice([v for v in vocabulary if v != words[i]])
    return " ".join(words)


def swap_words(text: str, level: float, seed: Seed = 0) -> str:
    """Swap round(level · (words − 1)) adjacent word pairs, chosen among the pairs, applied left to right."""
    words = text.split()
    k = units_changed(level, max(len(words) - 1, 0))
    if k == 0:
        return text
    for i in sorted(random.Random(seed).sample(range(len(words) - 1), k)):
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


CORRUPTIONS: dict[str, Callable[[str, float, Seed], str]] = {
    "emoji": insert_emoji,
    "char-sub": substitute_chars,
    "char-del": delete_chars,
    "word-del": delete_words,
    "word-sub": substitute_words,
    "word-swap": swap_words,
}
#: kinds a study accepts: each corruption, and "mixed" (one kind drawn per text)
KINDS = (*CORRUPTIONS, "mixed")


def corrupt(text: str, kind: str, level: float, seed: Seed = 0, mixed_kinds: Sequence[str] = tuple(CORRUPTIONS)) -> str:
    """Apply corruption `kind` at `level`; "mixed" draws one of `mixed_kinds` with the seed, then applies it."""
    if kind == "mixed":
        if not mixed_kinds:
            raise ConfigError("mixed noise needs at least one kind")
        kind = random.Random(f"kind:{seed}").choice(list(mixed_kinds))
    fn = CORRUPTIONS.get(kind)
    if fn is None:
        raise ConfigError(f"noise kind {kind!r} is not one of {', '.join(KINDS)}")
    return fn(text, level, seed)


def corrupt_data(data: TaskData, kind: str, level: float, seed: int, rows: Sequence[int] | None = None,
                 mixed_kinds: Sequence[str] = tuple(CORRUPTIONS)) -> TaskData:
    """A copy of `data` with the texts (both texts of a pair) at `rows` (default all) corrupted; labels,
    row ids and the other texts are shared. Row i's text uses seed "<seed>:<kind>:<level>:<row id>:<a|b>",
    so a row is corrupted the same way whatever else is chosen. Cost: one pass over the chosen texts."""
    chosen = range(len(data)) if rows is None else rows
    texts = list(data.texts)
    pairs = None if data.text_pairs is None else list(data.text_pairs)
    for i in chosen:
        key = f"{seed}:{kind}:{level:g}:{data.row_ids[i]}"
        texts[i] = corrupt(texts[i], kind, level, key + ":a", mixed_kinds)
        if pairs is not None:
            pairs[i] = corrupt(pairs[i], kind, level, key + ":b", mixed_kinds)
    return dataclasses.replace(data, texts=texts, text_pairs=pairs)


@dataclass
class NoiseConfig(StudyConfig):
    """`mft study noise`: train clean, test on corrupted text at several levels; optionally noise-augmented
    training on the same rows."""

    kinds: str = help_field("corruptions tested: comma-separated emoji, char-sub, char-del, word-del, word-sub, "
                            "word-swap, mixed (or all)", "all")
    levels: str = help_field("noise levels tested (share of units changed), comma-separated in [0, 1]; level 0 "
                             "(clean) is always included", "0.1,0.2,0.3")
    augment: bool = help_field("also train a model on noise-augmented rows and test it the same way", True)
    augment_kinds: str = help_field("corruptions of the augmented training texts (one drawn per text)",
                                    "emoji,char-sub,word-del")
    augment_level: float = help_field("noise level of the augmented training texts, in [0, 1]", 0.2)
    augment_share: float = help_field("share of the training rows whose text is corrupted, in [0, 1]", 0.5)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kinds = ",".join(parse_names("--kinds", self.kinds, KINDS))
        self.augment_kinds = ",".join(parse_names("--augment-kinds", self.augment_kinds, tuple(CORRUPTIONS)))
        levels = parse_float_list("--levels", self.levels)
        for lv in levels:
            if math.isnan(lv) or not 0.0 <= lv <= 1.0:
                raise ConfigError(f"--levels {lv:g} is outside [0, 1]")
        self.levels = ",".join(f"{lv:g}" for lv in sorted(set(levels)))
        for name in ("augment_level", "augment_share"):
            v = getattr(self, name)
            if math.isnan(v) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} {v} is outside [0, 1]")

    @property
    def level_list(self) -> list[float]:
        return [float(v) for v in self.levels.split(",") if v] if self.levels else []


def run_noise(cfg: NoiseConfig, progress: Progress | None = None) -> StudyOutput:
    """Train clean (and noise-augmented) models on the pool; evaluate each on the clean validation split and
    on every kind × level of corrupted validation text; write the results folder.

    Cost: one or two training runs, then per model 1 + kinds × levels validation passes (the corrupted
    splits are built and tokenized once and shared by both models).
    """
    progress = progress or Progress()
    timer = Timer()
    with ResultsFolder(cfg.out, "noise") as folder:
        log.info("config: %s", cfg.to_dict())
        with timer("load"):
            bench = Bench.of(cfg)
        ft = cfg.finetune_config()
        pool = list(range(len(bench.train)))
        kinds = cfg.kinds.split(",")
        augment_kinds = cfg.augment_kinds.split(",")

        with timer("corrupt"):
            noisy: list[tuple[str, float, Any, float]] = [("none", 0.0, bench.vsets, 0.0)]
            for kind in kinds:
                for level in [lv for lv in cfg.level_list if lv > 0]:
                    data = corrupt_data(bench.val, kind, level, cfg.data.seed)
                    noisy.append((kind, level, bench.validation_sets(data), _changed_share(bench.val, data)))

        models: dict[str, Any] = {}
        trials: dict[str, Any] = {}
        with timer("train"):
            trial = run_trial(bench, ft, pool, progress=progress)
            models["clean"] = trial
            trials["clean"] = trial_record(trial)
            if cfg.augment:
                rng = np.random.default_rng([cfg.data.seed, 7])
                n_aug = units_changed(cfg.augment_share, len(pool))
                aug_rows = sorted(rng.choice(len(pool), size=n_aug, replace=False).tolist()) if n_aug else []
                aug_data = corrupt_data(bench.train, "mixed", cfg.augment_level, cfg.data.seed + 1, aug_rows, augment_kinds)
                trial = run_trial(bench, ft, pool, train_tokens=bench.tokens(aug_data), progress=progress)
                models["augmented"] = trial
                trials["augmented"] = {**trial_record(trial), "corrupted_rows": n_aug,
                                       "changed_share": _changed_share(bench.train, aug_data)}

        table: list[dict[str, Any]] = []
        with timer("evaluate"):
            progress.phase("evaluate noisy splits", len(models) * len(noisy))
            for training, trial in models.items():
                for kind, level, vsets, changed in noisy:
                    metrics = halves_metrics(bench, trial.model, vsets)
                    table.append({"training": training, "kind": kind, "level": level, "changed_share": changed,
                                  **flat_metrics(metrics)})
                    progress.advance(1)
            progress.done()

        metric = bench.spec.primary_metric
        record = base_record(cfg, "noise", bench, timer.total())
        record.update(table=table, trials=trials, degradation=_degradation(table, metric),
                      examples=_examples(bench.val, kinds, cfg.level_list, cfg.data.seed))
        write_table(folder, "noise.csv", table)
        _plot(table, metric, folder.path / "accuracy_vs_noise.png")
        # the examples hold emojis: UTF-8 whatever the locale
        (folder.path / "summary.txt").write_text(_summary(record, metric), encoding="utf-8")
        folder.write_json("results.json", record)
        out = folder.commit()
    return StudyOutput(out, record, table)


def _changed_share(before: TaskData, after: TaskData) -> float:
    changed = [a != b for a, b in zip(before.texts, after.texts)]
    if before.text_pairs is not None:
        changed = [c or a != b for c, a, b in zip(changed, before.text_pairs, after.text_pairs)]
    return float(np.mean(changed)) if changed else 0.0


def _degradation(table: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per training and kind: the metric's drop from clean to the highest level (evaluation half)."""
    out = []
    for training in dict.fromkeys(r["training"] for r in table):
        rows = [r for r in table if r["training"] == training]
        clean = next(r[metric] for r in rows if r["kind"] == "none")
        for kind in dict.fromkeys(r["kind"] for r in rows if r["kind"] != "none"):
            worst = max((r for r in rows if r["kind"] == kind), key=lambda r: r["level"])
            out.append({"training": training, "kind": kind, "level": worst["level"], "clean": clean,
                        "noisy": worst[metric], "drop": clean - worst[metric]})
    return out


def _examples(val: TaskData, kinds: list[str], levels: list[float], seed: int, n: int = 2) -> list[dict[str, Any]]:
    """A few corrupted validation texts per kind at the highest level, for the reader to judge the noise."""
    top = max([lv for lv in levels if lv > 0], default=0.0)
    rows = list(range(min(n, len(val))))
    out = []
    for kind in kinds:
        data = corrupt_data(val.subset(rows), kind, top, seed)
        out += [{"kind": kind, "level": top, "clean": val.texts[i], "noisy": data.texts[i]} for i in rows]
    return out


def _summary(record: dict[str, Any], metric: str) -> str:
    c, d = record["config"], record["data"]
    cols = ["training", "kind", "level", "changed_share"] + [k for k in record["table"][0]
                                                            if k not in ("training", "kind", "level", "changed_share")]
    lines = [
        f"Noise robustness on {d['task']} ({c['method']}, model {d['model']})",
        f"pool {d['pool']} training rows, seed {c['seed']}; levels {c['levels']} (share of words/letters changed)",
        (f"augmented training: {c['augment_share']:g} of the rows corrupted at level {c['augment_level']:g} "
         f"with one of {c['augment_kinds']}" if c["augment"] else "no augmented training"),
        f"metrics: evaluation half (n={d['n_evaluation_half']}); *_whole: whole split (n={d['n_validation']})",
        "",
        table_text(record["table"], cols),
        "",
        f"{metric} drop from clean to the highest level (evaluation half):",
    ]
    lines += [f"  {r['training']:<10} {r['kind']:<10} level {r['level']:g}: {r['clean']:.4f} -> {r['noisy']:.4f} "
              f"({r['noisy'] - r['clean']:+.4f})" for r in record["degradation"]]
    lines += ["", "examples:"] + [f"  [{e['kind']} {e['level']:g}] {e['noisy']}" for e in record["examples"]]
    lines += ["", "timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in record["timings"].items())]
    return "\n".join(lines) + "\n"


def _plot(table: list[dict[str, Any]], metric: str, path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"clean": "-", "augmented": "--"}
    colors: dict[str, Any] = {}
    for training in dict.fromkeys(r["training"] for r in table):
        rows = [r for r in table if r["training"] == training]
        clean = next(r[metric] for r in rows if r["kind"] == "none")
        for kind in dict.fromkeys(r["kind"] for r in rows if r["kind"] != "none"):
            pts = sorted((r["level"], r[metric]) for r in rows if r["kind"] == kind)
            xs, ys = [0.0] + [p[0] for p in pts], [clean] + [p[1] for p in pts]
            line, = ax.plot(xs, ys, styles.get(training, ":"), marker="o" if training == "clean" else "s",
                            ms=3 if training == "clean" else 4, color=colors.get(kind),
                            label=f"{kind} ({training}-trained)")
            colors.setdefault(kind, line.get_color())
        if len(rows) == 1:
            ax.axhline(clean, ls=styles.get(training, ":"), label=f"clean ({training}-trained)")
    ax.set_xlabel("noise level (share of units changed)")
    ax.set_ylabel(f"{metric} (evaluation half)")
    ax.set_title(f"{metric} vs noise: solid clean-trained, dashed noise-augmented")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
