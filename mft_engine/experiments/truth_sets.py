"""The ground truth of `mft validate-scorer`: the sets ΔL is measured on, and its measurement.

`truth_sets` builds the scoring half and the held-out set of --held-out (`TruthSet`); `measure_set` zeroes
every sampled item alone on one set, in chunks of examples (`chunked`), each torchrun rank its `item_block`
of the items (cut by RemovalOracle.item_costs) and its `noise_share` of the noise floor, writing each
(chunk, rank) result as a shard under the run folder's TRUTH_DIR that --resume reads back, and returns
the set's `SetTruth` (ΔL, per-example loss changes, noise floor, bootstrap classes; `SetTruth.judge`
judges a scorer against them); `reuse_ground_truth` reads the
same from an earlier run's folder instead (--ground-truth). experiments/validate_scorer.py runs the
pipeline around it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..collect.distributed import World, deal_by_cost, rank_tag, shard_by_cost
from ..errors import ConfigError
from ..report.progress import Progress
from ..scoring.ground_truth.judge import ScorerVerdict, base_rate, class_counts, classify_items, judge_scorer

if TYPE_CHECKING:  # type hints only: validate_scorer imports this module
    from .validate_scorer import ValidateConfig

log = logging.getLogger("mft_engine")
GROUND_TRUTH_DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: judged items the float32 ground truth is compared with float64 on (the noise floor's pilot)
PILOT_ITEMS = 100
#: the ground-truth shards inside a run folder: one file per (set, chunk, rank), written as each finishes
TRUTH_DIR = "truth"


@dataclass
class TruthSet:
    """A set of examples the ground truth is measured on: "scoring" (the scoring half, which scorers may use)
    or "heldout" (rows no scorer saw); its HF batches, and per part the split and rows it holds."""

    name: str
    batches: list[dict]
    parts: list[dict[str, Any]]


def truth_sets(cfg: ValidateConfig, bench) -> list[TruthSet]:
    """The scoring half, and the held-out set of --held-out when it names one (its parts concatenated).

    ConfigError (exit 2) when train-last:N asks for more rows than the training split has, or overlaps the
    --samples rows that g and H are built on. Cost: tokenizing the held-out training rows once.
    """
    from ..data import objective_batches, tokenize_split

    data = bench.data
    budget = cfg.data.eval_batch_tokens
    sets = [TruthSet("scoring", bench.score_batches,
                     [{"split": "validation", "which": "scoring half", "rows": [int(r) for r in data.scoring_rows]}])]
    batches: list[dict] = []
    parts: list[dict[str, Any]] = []
    for kind, count in cfg.held_out_parts():
        if kind == "evaluation":
            rows = [int(r) for r in data.evaluation_rows]
            batches += objective_batches(data.val_tokens, rows, data.val.labels, False, budget)
            parts.append({"split": "validation", "which": "evaluation half", "rows": rows})
            continue
        n_train = len(data.train)
        if count > n_train:
            raise ConfigError(f"--held-out train-last:{count} asks for more rows than the {n_train} of the training split")
        rows = list(range(n_train - count, n_train))
        overlap = {int(r) for r in data.rows} & set(rows)
        if overlap:
            raise ConfigError(f"--held-out train-last:{count} overlaps {len(overlap)} of the --samples rows g and H are "
                              f"built on (e.g. row {min(overlap)}); use fewer --samples with --sample-order first, or "
                              "a smaller N")
        tokens = tokenize_split(data.tokenizer, data.train, rows, max_length=cfg.data.max_length)
        batches += objective_batches(tokens, rows, data.train.labels, False, budget)
        parts.append({"split": "train", "which": f"last {count} rows", "rows": rows})
    if parts:
        sets.append(TruthSet("heldout", batches, parts))
    return sets


def chunked(batches: list[dict], limit: int) -> list[list[dict]]:
    """`batches` in consecutive groups of at most `limit` examples (a batch is never split; one larger
    than `limit` is a group of its own)."""
    out: list[list[dict]] = []
    cur: list[dict] = []
    n = 0
    for b in batches:
        m = int(b["labels"].shape[0])
        if cur and n + m > limit:
            out.append(cur)
            cur, n = [], 0
        cur.append(b)
        n += m
    if cur:
        out.append(cur)
    return out


@dataclass
class SetTruth:
    """The ground truth of the sampled items on one TruthSet: ΔL [k], the per-example loss changes [k, n]
    (None when reused from a folder without them), the noise record and floor, the items' bootstrap
    classes (judge.classify_items), the base loss, the seconds the zeroing took, and the oracle itself when
    the set fitted in one chunk (kept for the additivity check), and the perturbed layer copies its oracles
    evaluated at once (RemovalOracle.stack_copies, the smallest over the chunks; None when reused)."""

    name: str
    batches: list[dict]
    n_examples: int
    n_chunks: int
    delta: np.ndarray
    changes: np.ndarray | None
    noise: dict[str, Any]
    floor: float
    base_loss: float
    seconds: float | None
    classes: np.ndarray | None = None
    oracle: Any = None
    stack_copies: int | None = None

    def judge(self, name: str, signed: bool, scores: np.ndarray, cfg: ValidateConfig) -> ScorerVerdict:
        """judge_scorer of `scores` against this set's ΔL, floor and classes."""
        return judge_scorer(name, signed, scores, self.delta, self.floor, self.classes, cfg.resamples, cfg.data.seed)

    def summary(self) -> dict[str, Any]:
        """The set's own figures: size, base loss, noise floor, base rate, median |ΔL|, item classes, and the
        layer copies stacked per evaluation."""
        return {"n_examples": self.n_examples, "chunks": self.n_chunks, "base_loss": self.base_loss,
                "noise_floor": self.floor, "base_rate": base_rate(self.delta, self.floor),
                "n_below_noise": int(np.sum(np.abs(self.delta) <= self.floor)),
                "median_abs_delta": float(np.median(np.abs(self.delta))), "stack_copies": self.stack_copies,
                "classes": class_counts(self.classes) if self.classes is not None else None}

    def joint_and_singles(self, model: torch.nn.Module, chosen: list[tuple[str, int]],
                          cfg: ValidateConfig) -> tuple[np.ndarray, float]:
        """(ΔL of each of `chosen` alone, ΔL of all of them zeroed together) on this set, through the kept
        oracle or, for a chunked set, an oracle per chunk again (the chunks weighted by their examples)."""
        from ..scoring.ground_truth import RemovalOracle

        if self.oracle is not None:
            return self.oracle.delta(chosen), float(self.oracle.joint_delta(chosen))
        singles, joint = np.zeros(len(chosen)), 0.0
        for part in chunked(self.batches, cfg.truth_chunk_examples):
            o = RemovalOracle(model, part, GROUND_TRUTH_DTYPES[cfg.precision], cfg.stack_bytes())
            w = o.n / self.n_examples
            singles += w * o.delta(chosen)
            joint += w * float(o.joint_delta(chosen))
            del o
        return singles, joint


def item_block(costs: np.ndarray, w: World) -> range:
    """This rank's contiguous block of the items whose estimated `costs` (RemovalOracle.item_costs) are
    given, in flat order so a layer's items stay together for stacking, cut where the cumulative cost
    crosses each rank's equal share (a block may be empty). Blocks cover every item once; alone, all."""
    return shard_by_cost(costs, w, at_least_one=False)


def noise_share(parts: dict[str, float], costs: np.ndarray, w: World) -> list[str]:
    """The noise-floor parts (RemovalOracle.noise_parts: name → estimated cost) this rank measures: dealt
    costliest first to the rank whose items and parts cost least so far, so the ranks finish together."""
    if not w.distributed:
        return list(parts)
    cum = np.concatenate([[0.0], np.cumsum(costs)])
    loads = []
    for r in range(w.size):
        b = item_block(costs, World(r, w.size))
        loads.append(float(cum[b.stop] - cum[b.start]))
    names = list(parts)
    return [names[i] for i in deal_by_cost([parts[n] for n in names], w.size, loads)[w.rank]]


def _shard_keys(items: list[tuple[str, int]]) -> np.ndarray:
    return np.array([f"{n}:{i}" for n, i in items])


def _read_shard(path: Path, items: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray] | None:
    """(ΔL, per-example changes) of `items` from a finished shard, or None when there is none for them."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        if not np.array_equal(z["items"], _shard_keys(items)):
            return None
        return z["delta"], z["changes"]


def _write_shard(path: Path, items: list[tuple[str, int]], delta: np.ndarray, changes: np.ndarray) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, items=_shard_keys(items), delta=delta, changes=changes)
    os.replace(tmp, path)  # a shard is whole or absent


def _gather_items(delta: np.ndarray, changes: np.ndarray, seconds: float, noise: dict[str, np.ndarray], w: World
                  ) -> tuple[np.ndarray, np.ndarray, float, dict[str, np.ndarray]]:
    """Every rank's (ΔL, changes) concatenated in rank order (= item order), the slowest rank's seconds, and
    every rank's measured noise parts in one dict."""
    if not w.distributed:
        return delta, changes, seconds, noise
    import torch.distributed as dist

    parts: list[Any] = [None] * w.size
    dist.all_gather_object(parts, (delta, changes, seconds, noise))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts], axis=0),
            max(p[2] for p in parts), {k: v for p in parts for k, v in p[3].items()})


def _measure_noise_share(o, model: torch.nn.Module, batches: list[dict], pilot_items: list[tuple[str, int]],
                         costs: np.ndarray, cfg: ValidateConfig, progress: Progress, label: str, w: World
                         ) -> dict[str, np.ndarray]:
    """This rank's share of the noise floor (under torchrun): its `noise_share` of the oracle's noise parts
    and, for a float32 ground truth, of the float64 pilot items ("pilot_<k>": [ΔL64]; a float64 oracle is
    built only on a rank that holds some, each such item costed at twice its float32 cost)."""
    from ..scoring.ground_truth import RemovalOracle

    parts = o.noise_parts(seed=cfg.data.seed)
    chosen = pilot_items[:PILOT_ITEMS] if o.dtype != torch.float64 else []
    parts.update({f"pilot_{k}": 2.0 * c for k, c in enumerate(o.item_costs(chosen))})
    share = noise_share(parts, costs, w)
    progress.phase(f"ground truth ({label}): noise floor ({len(share)} parts)")
    measured = {p: o.measure_noise(p, seed=cfg.data.seed) for p in share if not p.startswith("pilot_")}
    mine = [int(p.split("_")[1]) for p in share if p.startswith("pilot_")]
    log.info("ground truth %s: rank %d measures %d of the %d noise parts and %d of the %d float64 pilot items",
             label, w.rank, len(share) - len(mine), len(parts) - len(chosen), len(mine), len(chosen))
    if mine:
        ref = RemovalOracle(model, batches, torch.float64, cfg.stack_bytes())
        for k, value in zip(mine, ref.delta([chosen[k] for k in mine])):
            measured[f"pilot_{k}"] = np.array([value])
        del ref
    progress.done()
    return measured


def measure_set(ts: TruthSet, model: torch.nn.Module, items: list[tuple[str, int]], cfg: ValidateConfig,
                progress: Progress, pilot: np.ndarray, reused: dict[str, Any] | None = None,
                truth_dir: Path | None = None, w: World | None = None) -> SetTruth | None:
    """ΔL and the per-example loss changes of every item zeroed alone on `ts`, the noise floor (on its first
    chunk; the float32 pilot is `items[pilot]`), and the items' bootstrap classes.

    The set is measured in chunks of at most --truth-chunk-examples examples, an oracle each (its activation
    cache is what grows with the examples); ΔL = Σ_chunks (n_c / n) ΔL_c, and a one-chunk set's ΔL is its
    oracle's, bit for bit. Each (chunk, rank) result is a shard file in `truth_dir`, written when it
    finishes and read back instead of measured when it is there (--resume). Under torchrun each rank
    measures its `item_block` of the items (per chunk, by that chunk's item costs) and on the first chunk
    its `noise_share` of the noise floor's parts; blocks and parts are gathered in rank order, and rank 0
    alone goes on (other ranks get None). With `reused` (reuse_ground_truth) nothing is zeroed. Cost: per
    chunk an oracle's forward and k item evaluations (about 1 / world size of their cost per rank); the
    noise floor once (shared the same way); classify_items (k·n·resamples flops).
    """
    from ..scoring.ground_truth import RemovalOracle

    w = w or World()
    dtype = GROUND_TRUTH_DTYPES[cfg.precision]
    chunks = chunked(ts.batches, cfg.truth_chunk_examples)
    n = sum(int(b["labels"].shape[0]) for b in ts.batches)
    if reused is not None:
        got = reused[ts.name]
        tr = SetTruth(ts.name, ts.batches, n, len(chunks), got["delta"], got["changes"], got["noise"], 0.0,
                      got["base_loss"], got["seconds"])
    else:
        delta = np.zeros(len(items), dtype=np.float64)
        changes, base, noise, kept, seconds, copies = [], 0.0, {}, None, 0.0, []
        pilot_items = [items[i] for i in pilot]
        for c, part in enumerate(chunks):
            label = ts.name if len(chunks) == 1 else f"{ts.name} {c + 1}/{len(chunks)}"
            progress.phase(f"ground truth ({label}): cache activations")
            o = RemovalOracle(model, part, dtype, cfg.stack_bytes())
            progress.done()
            costs = o.item_costs(items)
            block = item_block(costs, w)
            mine = items[block.start:block.stop]
            progress.phase(f"ground truth ({label}): zero each parameter alone", len(mine))
            def tick(k: int, done: list[int] = [0]) -> None:  # noqa: B006  (one counter per chunk)
                progress.advance(k - done[0])
                done[0] = k

            shard = truth_dir / f"{ts.name}_c{c}_{rank_tag(w)}.npz" if truth_dir is not None else None
            got = _read_shard(shard, mine) if shard is not None else None
            t = time.perf_counter()
            if got is None:
                d_mine, ch_mine = o.delta_per_example(mine, on_item=tick)
                if shard is not None:
                    _write_shard(shard, mine, d_mine, ch_mine)
            else:
                d_mine, ch_mine = got
                log.info("ground truth %s: %d items read back from %s", label, len(mine), shard.name)
                progress.advance(len(mine))
            item_s = time.perf_counter() - t
            copies.append(o.stack_copies)
            progress.done()
            measured: dict[str, np.ndarray] = {}
            if c == 0 and w.distributed:  # the noise floor's parts, shared out like the items
                measured = _measure_noise_share(o, model, part, pilot_items, costs, cfg, progress, label, w)
            d, ch, secs, measured = _gather_items(d_mine, ch_mine, item_s, measured, w)
            seconds += secs
            if not w.is_main:
                del o
                continue
            weight = o.n / n
            delta += d * weight
            changes.append(ch)
            base += o.base_loss * weight
            if c == 0:
                progress.phase(f"ground truth ({label}): noise floor")
                reference = None  # the float64 pilot, when the ranks measured it (_measure_noise_share)
                if any(k.startswith("pilot_") for k in measured):
                    reference = np.concatenate([measured.pop(f"pilot_{k}")
                                                for k in range(len(pilot_items[:PILOT_ITEMS]))])
                noise = o.noise_floor(seed=cfg.data.seed, pilot=PILOT_ITEMS, pilot_items=pilot_items,
                                      pilot_delta=d[pilot], measured=measured, pilot_reference=reference)
                noise["measured_on_examples"] = o.n
                progress.done()
            kept = o if len(chunks) == 1 else None
            del o
        if not w.is_main:
            return None
        tr = SetTruth(ts.name, ts.batches, n, len(chunks), delta, np.concatenate(changes, axis=1), noise, 0.0,
                      base, seconds, oracle=kept, stack_copies=min(copies))
    # float64: every no-op and regrouped evaluation counts (RemovalOracle.noise_floor). float32: ΔL is computed
    # with the same matmul shapes for L' and L, so the regrouping offset cancels; its error is measured against
    # float64 on the pilot items instead, with the stacked no-op's rounding.
    tr.floor = (float(tr.noise["max"]) if cfg.precision == "float64"
                else max(float(tr.noise["noop_max"]), float(tr.noise.get("pilot_max_abs_diff", 0.0))))
    if tr.changes is not None:
        progress.phase(f"ground truth ({ts.name}): bootstrap classes of the items")
        tr.classes = classify_items(tr.changes, tr.floor, cfg.resamples, cfg.data.seed)[0]
        progress.done()
    return tr


def reuse_ground_truth(cfg: ValidateConfig, items: list[tuple[str, int]], sets: list[str]) -> dict[str, Any]:
    """Per set name in `sets`: {delta, changes (None when the folder has no per_example_<set>.npy), noise,
    base_loss, seconds} from the validate run folder `cfg.ground_truth`; ConfigError (exit 2) when it is
    not one, was made with other settings or other sampled parameters, or lacks a set this run measures."""
    import csv
    import json

    folder = Path(cfg.ground_truth)
    table, results = folder / "ground_truth.csv", folder / "results.json"
    if not table.is_file() or not results.is_file():
        raise ConfigError(f"--ground-truth {folder} is not a validate-scorer results folder "
                          "(no ground_truth.csv and results.json)")
    record = json.loads(results.read_text())
    old, new = record.get("config", {}), cfg.to_dict()
    for key in ("model", "seed", "n_params", "exclude", "precision", "task"):
        if old.get(key) != new[key]:
            raise ConfigError(f"--ground-truth {folder} was made with {key}={old.get(key)!r}, this run has "
                              f"{new[key]!r}")
    if "heldout" in sets and old.get("held_out") != new["held_out"]:
        raise ConfigError(f"--ground-truth {folder} was made with held_out={old.get('held_out')!r}, this run has "
                          f"{new['held_out']!r}")
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if [(r["parameter"], int(r["index"])) for r in rows] != list(items):
        raise ConfigError(f"--ground-truth {folder} holds other sampled parameters than this run's "
                          "(the model's eligible set differs)")
    noise = record.get("noise", {})
    sets_rec = record.get("sets") or {}
    params_per_s = record.get("params_per_s")
    out: dict[str, Any] = {}
    for name in sets:
        column = "delta_loss" if name == "scoring" else f"delta_loss_{name}"
        if rows and column not in rows[0]:
            raise ConfigError(f"--ground-truth {folder} has no {name} ground truth (no {column} column)")
        npy = folder / f"per_example_{name}.npy"
        changes = np.load(npy) if npy.is_file() else None
        out[name] = {"delta": np.array([float(r[column]) for r in rows], dtype=np.float64), "changes": changes,
                     # results written before the held-out set kept one flat noise record (the scoring half's)
                     "noise": noise.get(name, noise) if "max" not in noise else noise,
                     "base_loss": (sets_rec.get(name) or {}).get("base_loss", record.get("base_loss")),
                     "seconds": (len(rows) / params_per_s if params_per_s and name == "scoring" else None)}
    return out
