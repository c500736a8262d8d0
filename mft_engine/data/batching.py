"""Choosing examples, grouping them into batches, and turning batches into padded tensors.

Batches are lists of row positions into a TaskData; tensors are built per batch from token ids
tokenized once (`TokenizedSplit`), padded to the longest sequence in the batch only (dynamic
padding), so a batch of short SST-2 sentences costs a fraction of a 128-token batch.

Every batching rule of the engine lives here and takes its settings as arguments, not a config:
evaluation and objective batches (`eval_batches`, `objective_batches`: a token budget), the batches that
define g (`gradient_batches`), and the training loop's epochs (`length_bucketed_batches`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Sequence

import numpy as np
import torch

from mft_engine.errors import ConfigError
from mft_engine.data.tasks import TaskData


def select_samples(n_rows: int, n: int | None = None, order: str = "first", seed: int = 0) -> list[int]:
    """Choose `n` of `n_rows` rows: the first n in file order, or n drawn with `seed`.

    order="seeded" draws with `numpy.random.default_rng(seed).choice(n_rows, n, replace=False)` and
    keeps the draw order (so the first k of a seeded draw of n are not the same as a draw of k).
    n=None takes every row. Returns a list of n distinct ints in [0, n_rows). Cost: O(n_rows) for
    "seeded" (numpy permutes), O(n) for "first".
    Raises ConfigError when n < 1, n > n_rows, or order is unknown.
    """
    if n is None:
        n = n_rows
    if n < 1:
        raise ConfigError(f"number of samples {n} must be at least 1.")
    if n > n_rows:
        raise ConfigError(f"number of samples {n} exceeds the {n_rows} rows of the split.")
    if order == "first":
        return list(range(n))
    if order == "seeded":
        return np.random.default_rng(seed).choice(n_rows, size=n, replace=False).tolist()
    raise ConfigError(f"sample order {order!r} is unknown; expected 'first' or 'seeded'.")


def fixed_batches(indices: Sequence[int], batch_size: int, keep_last: bool = False) -> list[list[int]]:
    """Cut `indices` into consecutive batches of `batch_size`, in the given order.

    The last partial batch is dropped unless `keep_last` (so every batch has the same size and the same
    weight in a mean over batches): 1000 indices at 32 give 31 batches covering 992 of them.
    Raises ConfigError when batch_size < 1.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1.")
    idx = [int(i) for i in indices]
    stop = len(idx) if keep_last else len(idx) - len(idx) % batch_size
    return [idx[i : i + batch_size] for i in range(0, stop, batch_size)]


def token_budget_batches(
    lengths: Sequence[int],
    max_tokens: int,
    indices: Sequence[int] | None = None,
    max_batch_size: int | None = None,
    shuffle_seed: int | None = None,
) -> list[list[int]]:
    """Length-bucketed batches whose padded size (batch size × longest length) fits `max_tokens`.

    `lengths[i]` is the token count of row i; `indices` (default all rows) are the rows to batch.
    Rows are sorted by (length, row) and packed greedily, so batches hold similar lengths and little
    padding. A row longer than `max_tokens` gets a batch of its own (rows are never dropped). Batches
    come shortest first, or in an order shuffled with `shuffle_seed`; the result is deterministic.
    Cost: one sort, O(n log n).
    """
    if max_tokens < 1:
        raise ConfigError(f"token budget {max_tokens} must be at least 1.")
    if max_batch_size is not None and max_batch_size < 1:
        raise ConfigError(f"max batch size {max_batch_size} must be at least 1.")
    rows = range(len(lengths)) if indices is None else [int(i) for i in indices]
    ordered = sorted(rows, key=lambda i: (int(lengths[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in ordered:
        longest = int(lengths[i])  # ascending order: the newcomer is the longest
        fits = (len(current) + 1) * longest <= max_tokens
        room = max_batch_size is None or len(current) < max_batch_size
        if current and not (fits and room):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(batches))
        batches = [batches[k] for k in order]
    return batches


def split_by_length(
    batch_indices: Sequence[int],
    lengths: Sequence[int],
    max_pad_waste: float = 0.2,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Split one batch into length-homogeneous sub-batches, to compute it with less padding.

    Rows are sorted by (length, row) and a new sub-batch starts when adding the next row would make
    the padded fraction (1 − Σlen / (count × longest)) exceed `max_pad_waste`, or the padded size
    exceed `max_tokens`. The sub-batches partition the batch, so the batch's mean loss is
    Σ_s (len(s) / len(batch)) × mean_loss(s), and summed gradients add up exactly.
    Cost: one sort of the batch.
    """
    if not 0.0 <= max_pad_waste < 1.0:
        raise ConfigError(f"max_pad_waste {max_pad_waste} must be in [0, 1).")
    ordered = sorted((int(i) for i in batch_indices), key=lambda i: (int(lengths[i]), i))
    subs: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in ordered:
        n = int(lengths[i])
        count, tot = len(current) + 1, total + n
        waste = 1.0 - tot / (count * n) if n > 0 else 0.0
        too_big = max_tokens is not None and count * n > max_tokens
        if current and (waste > max_pad_waste or too_big):
            subs.append(current)
            current, tot = [], n
        current.append(i)
        total = tot
    if current:
        subs.append(current)
    return subs


@dataclass
class TokenizedSplit:
    """Token ids of the rows of a TaskData, unpadded: tokenize once, pad per batch.

    Indexed by row position in the TaskData (whether all rows or a subset were tokenized), so the
    same positions serve for `lengths[r]`, batching and labels. `input_ids[r]` (and
    `token_type_ids[r]` when the tokenizer makes them) is row r's id list truncated to `max_length`,
    or None for a row not tokenized; `lengths` is int64 [len(data)], 0 for rows not tokenized.
    Memory: about 28 bytes per token (Python ints in lists).
    """

    input_ids: list[list[int] | None]
    token_type_ids: list[list[int] | None] | None
    labels: list[int] | list[float]
    lengths: np.ndarray
    pad_token_id: int
    is_regression: bool
    max_length: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def rows(self) -> list[int]:
        """Positions of the tokenized rows, ascending."""
        return [r for r, ids in enumerate(self.input_ids) if ids is not None]

    def collate(
        self, indices: Sequence[int], labels: Sequence | None = None, regression: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Pad the rows at `indices` to the longest among them and stack them, in the given order.

        Returns input_ids, attention_mask (and token_type_ids when present) as int64 [B, L] with
        L = max length in the batch (right padding with pad_token_id / 0), and labels [B]: int64 for
        classification, float32 for regression. `labels` / `regression` override the stored ones
        (labels indexed by the same positions). Cost: one B × L fill.
        Raises ConfigError for an empty batch or a row that was not tokenized.
        """
        idx = [int(i) for i in indices]
        if not idx:
            raise ConfigError("cannot build a batch from zero rows.")
        missing = [i for i in idx if self.input_ids[i] is None]
        if missing:
            raise ConfigError(f"rows {missing[:5]} were not tokenized; pass them to tokenize_split.")
        lens = self.lengths[idx]
        width = int(lens.max())
        # One flat copy of the ids and a boolean scatter: per-row tensor construction would cost
        # ~5 µs a row, which dominates evaluation of short sentences.
        filled = np.arange(width)[None, :] < lens[:, None]
        ids_np = np.full((len(idx), width), self.pad_token_id, dtype=np.int64)
        total = int(lens.sum())
        ids_np[filled] = np.fromiter(chain.from_iterable(self.input_ids[i] for i in idx), np.int64, total)
        ids, mask = torch.from_numpy(ids_np), torch.from_numpy(filled.astype(np.int64))
        types = None
        if self.token_type_ids is not None:
            types_np = np.zeros((len(idx), width), dtype=np.int64)
            types_np[filled] = np.fromiter(
                chain.from_iterable(self.token_type_ids[i] for i in idx), np.int64, total
            )
            types = torch.from_numpy(types_np)
        out = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            out["token_type_ids"] = types
        source = self.labels if labels is None else labels
        reg = self.is_regression if regression is None else regression
        out["labels"] = torch.tensor([source[i] for i in idx], dtype=torch.float32 if reg else torch.long)
        return out

    #: The name the experiment pipelines use.
    batch = collate


def tokenize_split(
    tokenizer, data: TaskData, indices: Sequence[int] | None = None, max_length: int = 128
) -> TokenizedSplit:
    """Tokenize the rows of `data` at `indices` (default: all) once, without padding.

    Pairs are truncated "longest_first" to `max_length` tokens including special tokens. The result
    is indexed by row position in `data`; rows not in `indices` are left untokenized (None, length 0).
    Cost: one tokenizer call over the chosen texts (a fast tokenizer does SST-2's 67k sentences in a
    few seconds); no tensors are built until `collate`.
    """
    if max_length < 2:
        raise ConfigError(f"max_length {max_length} must be at least 2 (room for special tokens).")
    rows = list(range(len(data))) if indices is None else sorted({int(i) for i in indices})
    if not rows:
        raise ConfigError("cannot tokenize zero rows.")
    if rows[0] < 0 or rows[-1] >= len(data):
        raise ConfigError(f"row positions must lie in [0, {len(data)}); got {rows[0]}..{rows[-1]}.")
    subset = data if indices is None else data.subset(rows)
    enc = tokenizer(
        subset.texts,
        subset.text_pairs,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
    )
    input_ids: list[list[int] | None] = [None] * len(data)
    types_out: list[list[int] | None] | None = None
    types = enc.get("token_type_ids")
    if types is not None:
        types_out = [None] * len(data)
    lengths = np.zeros(len(data), dtype=np.int64)
    for k, r in enumerate(rows):
        input_ids[r] = list(enc["input_ids"][k])
        lengths[r] = len(input_ids[r])
        if types_out is not None:
            types_out[r] = list(types[k])
    pad = tokenizer.pad_token_id
    return TokenizedSplit(
        input_ids=input_ids,
        token_type_ids=types_out,
        labels=list(data.labels),
        lengths=lengths,
        pad_token_id=0 if pad is None else int(pad),
        is_regression=data.is_regression,
        max_length=max_length,
    )


def encode(
    tokenizer, data: TaskData, indices: Sequence[int], max_length: int = 128
) -> dict[str, torch.Tensor]:
    """Tokenize and pad the rows of `data` at `indices` into one batch, in that order.

    Same tensors as `tokenize_split(...).collate(indices)`; it tokenizes those rows each call, so for
    many batches over one split call `tokenize_split` once and `collate` per batch instead.
    """
    return tokenize_split(tokenizer, data, indices, max_length=max_length).collate(indices)


def validation_halves(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split rows 0..n-1 of a validation split into a scoring half and an evaluation half.

    A seeded permutation (`numpy.random.default_rng(seed).permutation(n)`) assigns its first n // 2
    rows to scoring (used for any choice made from validation data) and the other n − n // 2 to
    evaluation (reported figures); each half is returned sorted, so it reads in file order.
    Raises ConfigError when n < 2.
    """
    if n < 2:
        raise ConfigError(f"a validation split of {n} rows cannot be halved; expected at least 2.")
    perm = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return sorted(perm[:half].tolist()), sorted(perm[half:].tolist())


# Padding share above which a fixed batch is split into length-homogeneous parts (fewer padded FLOPs
# against smaller, less efficient matmuls).
PART_PAD_WASTE = 0.3
# mean reduction: the largest part (padded tokens) and the real tokens per accumulated batch.
MEAN_PART_TOKENS = 2048
MEAN_BATCH_TOKENS = 4096
#: rows sorted by length together, in units of batches: large enough for little padding, small enough
#: that batch composition still changes from epoch to epoch
BUCKET_BATCHES = 50


@dataclass
class Batch:
    """One gradient batch: its parts (HF-style dicts of tensors with `labels`) and its loss denominator.

    The batch's loss is Σ over its samples of ℓ_i / `denominator` (batch-sum: the batch size; mean: N).
    """

    parts: list[dict[str, torch.Tensor]]
    denominator: float
    size: int = field(default=0)

    def __post_init__(self) -> None:
        if not self.size:
            self.size = sum(int(p["labels"].shape[0]) for p in self.parts)


def eval_batches(tokens: TokenizedSplit, rows: list[int], labels, regression: bool,
                 max_tokens: int) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(positions, HF batch) pairs over `rows` of a tokenized split, token-budget batched by length.

    `positions` index into `rows` (not into the split), so a caller lists per-row values in `rows` order;
    `labels` / `regression` are passed to `TokenizedSplit.batch`. Lazy: one batch is built per step.
    """
    lengths = [tokens.lengths[r] for r in rows]
    for group in token_budget_batches(lengths, max_tokens):
        chosen = [rows[i] for i in group]
        yield group, tokens.batch(chosen, labels, regression)


def objective_batches(tokens: TokenizedSplit, rows: list[int], labels, regression: bool,
                      max_tokens: int) -> list[dict[str, torch.Tensor]]:
    """HF batches over `rows`, grouped by length within a token budget (little padding): the batches of
    `eval_batches`, built at once and without their positions (an Objective keeps them)."""
    lengths = [int(tokens.lengths[r]) for r in rows]
    return [tokens.batch([rows[i] for i in g], labels, regression) for g in token_budget_batches(lengths, max_tokens)]


def gradient_batches(tokens: TokenizedSplit, rows: list[int], labels, regression: bool, *, reduction: str,
                     batch_size: int, keep_last: bool) -> list[Batch]:
    """The batches that define g over `rows` of a tokenized split.

    reduction "batch-sum": fixed batches of `batch_size` in sample order (the last partial one kept only
    with `keep_last`), each split by length into parts; loss = batch mean. "mean": token-budget batches,
    loss = Σ ℓ_i / N (`batch_size` and `keep_last` unused).
    """
    if reduction == "batch-sum":
        out = []
        for b in fixed_batches(rows, batch_size, keep_last=keep_last):
            parts = split_by_length(b, tokens.lengths, max_pad_waste=PART_PAD_WASTE)
            out.append(Batch([tokens.batch(p, labels, regression) for p in parts], float(len(b))))
        return out
    # mean: g does not depend on batching, so sort by length into homogeneous parts and group parts into
    # batches of ~MEAN_BATCH_TOKENS real tokens: one accumulate_ per group amortises the per-batch cost.
    parts = split_by_length(rows, tokens.lengths, max_pad_waste=PART_PAD_WASTE / 3, max_tokens=MEAN_PART_TOKENS)
    out, group, real = [], [], 0
    for p in parts:
        group.append(tokens.batch(p, labels, regression))
        real += int(sum(tokens.lengths[r] for r in p))
        if real >= MEAN_BATCH_TOKENS:
            out.append(Batch(group, float(len(rows))))
            group, real = [], 0
    if group:
        out.append(Batch(group, float(len(rows))))
    return out


def length_bucketed_batches(rows: Sequence[int], lengths: Sequence[int], batch_size: int, seed: int,
                            epoch: int = 0, bucket_batches: int = BUCKET_BATCHES) -> list[list[int]]:
    """One epoch's batches of `batch_size` row positions: a seeded shuffle, then within each bucket of
    `bucket_batches × batch_size` rows a sort by (length, row) cut into batches, then the batches shuffled.

    Every row appears once; at most one batch (the last of the last bucket) is smaller. The order depends
    only on (seed, epoch). Cost: one permutation and one sort per bucket, O(n log n).
    """
    rng = np.random.default_rng([seed, epoch])
    rows = [int(r) for r in rows]
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    span = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(shuffled), span):
        bucket = sorted(shuffled[start:start + span], key=lambda r: (int(lengths[r]), r))
        batches += [bucket[i:i + batch_size] for i in range(0, len(bucket), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]
