"""Mask: the zeroed flat indices over a list of named parameters, with the values they held (undoable)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import ops
from ..errors import MaskMismatchError


@dataclass
class Mask:
    """Flat indices (int64, ascending) over the concatenation of `names` in order, row-major inside each.

    `values` holds the original values once the mask has been applied (or loaded from a saved mask), so
    `restore` puts back exactly what was there. Memory: 8 bytes per index + 4 per saved value.
    """

    names: list[str]
    shapes: list[tuple[int, ...]]
    indices: torch.Tensor
    values: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: The file a loaded mask came from (None when built in memory); error messages name it.
    source: str | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __repr__(self) -> str:
        """One line: how many entries, over how many tensors, the share of their elements, and whether the
        original values are held (e.g. `Mask(2,271,296 entries of 22,713,984 in 101 tensors (10.00%),
        values saved)`); never the indices themselves."""
        total = sum(int(torch.Size(s).numel()) for s in self.shapes)
        share = f"{100 * len(self) / total:.2f}%" if total else "n/a"
        held = "values saved" if self.values is not None else "no values saved"
        kind = f", {self.info['kind']}" if isinstance(self.info.get("kind"), str) else ""
        src = f", from {self.source}" if self.source else ""
        return (f"Mask({len(self):,} entries of {total:,} in {len(self.names)} tensors ({share}), "
                f"{held}{kind}{src})")

    @property
    def _where(self) -> str:
        # Messages name the file a loaded mask came from, so a user can tell which of several is wrong.
        return f"mask file {self.source}" if self.source else "the mask"

    def _params(self, model: torch.nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        out = []
        for n, shape in zip(self.names, self.shapes):
            if n not in params:
                raise MaskMismatchError(f"{self._where} names parameter {n!r}, which the model does not have")
            if tuple(params[n].shape) != tuple(shape):
                raise MaskMismatchError(f"{self._where} expects {n} of shape {tuple(shape)}, the model has "
                                        f"{tuple(params[n].shape)}")
            out.append(params[n])
        self._check_indices(sum(p.numel() for p in out), full=False)
        return out

    def _check_indices(self, total: int, full: bool = True) -> None:
        """MaskMismatchError unless `indices` is int64, 1-D, strictly ascending and within [0, total).

        `full` checks every step (O(k), at load); otherwise only dtype, rank and the two ends (O(1), at
        apply time: masks built in memory come sorted from the selection, loaded ones were checked fully).
        """
        idx, where = self.indices, self._where
        if not isinstance(idx, torch.Tensor):
            raise MaskMismatchError(f"{where}: tensor 'indices' is a {type(idx).__name__}, not a tensor")
        if idx.dtype != torch.int64:
            raise MaskMismatchError(f"{where}: tensor 'indices' has dtype {str(idx.dtype).replace('torch.', '')}; "
                                    "expected int64")
        if idx.dim() != 1:
            raise MaskMismatchError(f"{where}: tensor 'indices' has shape {tuple(idx.shape)}; expected one dimension")
        if idx.numel() == 0:
            return
        if int(idx[0]) < 0:
            bad = int(torch.nonzero(idx < 0)[0, 0]) if full else 0
            raise MaskMismatchError(f"{where}: tensor 'indices' holds the negative index {int(idx[bad])} at "
                                    f"position {bad}")
        if full and idx.numel() > 1:
            steps = idx[1:] - idx[:-1]
            if bool((steps <= 0).any()):
                i = int(torch.nonzero(steps <= 0)[0, 0])
                what = "a duplicate" if int(steps[i]) == 0 else "out of order"
                raise MaskMismatchError(f"{where}: tensor 'indices' is not strictly ascending: {int(idx[i + 1])} at "
                                        f"position {i + 1} is {what} after {int(idx[i])}")
        if int(idx[-1]) >= total:
            raise MaskMismatchError(f"{where}: tensor 'indices' holds index {int(idx[-1])}, out of range for the "
                                    f"{total} elements of its {len(self.names)} tensors")

    def _check_values(self) -> None:
        if self.values is None:
            return
        v, where = self.values, self._where
        if not isinstance(v, torch.Tensor) or v.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            kind = str(v.dtype).replace("torch.", "") if isinstance(v, torch.Tensor) else type(v).__name__
            raise MaskMismatchError(f"{where}: tensor 'values' has dtype {kind}; expected float32, float16 or bfloat16")
        if v.dim() != 1 or v.numel() != self.indices.numel():
            raise MaskMismatchError(f"{where}: tensor 'values' has shape {tuple(v.shape)}; expected "
                                    f"({self.indices.numel()},), one value per index")

    def apply(self, model: torch.nn.Module) -> "Mask":
        """Zero the masked parameters in place (mft::zero_masked_), keeping their values for restore().

        Raises MaskMismatchError when the mask names a parameter the model lacks, expects another shape,
        or holds an index outside the named tensors.
        """
        params = self._params(model)
        with torch.no_grad():
            saved = ops.zero_masked_([p.data for p in params], self._indices_on(params))
        if self.values is None:
            self.values = saved
        return self

    def restore(self, model: torch.nn.Module) -> None:
        """Write the saved values back (mft::restore_); exact, bit for bit."""
        if self.values is None:
            raise MaskMismatchError("this mask was never applied and holds no saved values to restore")
        params = self._params(model)
        self._check_values()
        if params and self.values.dtype != params[0].dtype:
            raise MaskMismatchError(f"{self._where}: tensor 'values' has dtype "
                                    f"{str(self.values.dtype).replace('torch.', '')}, the model's parameters "
                                    f"{str(params[0].dtype).replace('torch.', '')}")
        with torch.no_grad():
            idx = self._indices_on(params)
            ops.restore_([p.data for p in params], idx, self.values.to(idx.device))

    def _indices_on(self, params: list[torch.Tensor]) -> torch.Tensor:
        # A mask selected on one device (or loaded from a file: CPU) applies to a model on another.
        return self.indices.to(params[0].device) if params else self.indices

    def per_tensor_counts(self) -> dict[str, int]:
        """How many indices fall into each named tensor (O(k) via searchsorted)."""
        numels = torch.tensor([0] + [int(torch.Size(s).numel()) for s in self.shapes], dtype=torch.int64,
                              device=self.indices.device)
        bounds = torch.cumsum(numels, 0)
        counts = torch.searchsorted(self.indices, bounds[1:]) - torch.searchsorted(self.indices, bounds[:-1])
        return {n: int(c) for n, c in zip(self.names, counts.tolist())}

    def save(self, path: str | Path) -> None:
        """Write indices, saved values and metadata (names, shapes, info) to a safetensors file."""
        from safetensors.torch import save_file

        tensors = {"indices": self.indices.cpu().contiguous()}
        if self.values is not None:
            tensors["values"] = self.values.cpu().contiguous()
        meta = {"mft_mask": json.dumps({"names": self.names, "shapes": [list(s) for s in self.shapes],
                                        "info": self.info})}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "Mask":
        """Read a mask written by save(), checking it: MaskMismatchError, naming the file and the tensor, for
        an unreadable file, malformed metadata, an unknown tensor, indices that are not int64, 1-D,
        non-negative, strictly ascending and within the named tensors, or values of another length.

        Whether it fits a model (names, shapes) is checked by apply() / restore(). Cost: reading the file
        and one O(k) pass over the indices.
        """
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise MaskMismatchError(f"mask file {p} does not exist")
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = (f.metadata() or {}).get("mft_mask")
                if meta is None:
                    raise MaskMismatchError(f"{p} is not an mft mask (no mft_mask metadata)")
                keys = set(f.keys())
                unknown = sorted(keys - {"indices", "values"})
                if unknown:
                    raise MaskMismatchError(f"mask file {p} holds unknown tensor {unknown[0]!r}; expected "
                                            "'indices' and 'values'")
                if "indices" not in keys:
                    raise MaskMismatchError(f"mask file {p} has no tensor 'indices'")
                indices = f.get_tensor("indices")
                values = f.get_tensor("values") if "values" in keys else None
        except MaskMismatchError:
            raise
        except Exception as e:
            raise MaskMismatchError(f"mask file {p} could not be read ({type(e).__name__})") from None
        names, shapes, info = _parse_meta(meta, p)
        mask = cls(names, shapes, indices, values, info, source=str(p))
        mask._check_indices(sum(int(torch.Size(s).numel()) for s in shapes))
        mask._check_values()
        return mask


def _parse_meta(meta: str, p: Path) -> tuple[list[str], list[tuple[int, ...]], dict[str, Any]]:
    """names, shapes and info from the mft_mask metadata, or MaskMismatchError naming what is malformed."""
    def bad(what: str) -> MaskMismatchError:
        return MaskMismatchError(f"mask file {p} has malformed mft_mask metadata: {what}")

    try:
        data = json.loads(meta)
    except (json.JSONDecodeError, TypeError):
        raise bad("not JSON") from None
    if not isinstance(data, dict):
        raise bad(f"a JSON {type(data).__name__}, not an object")
    names, shapes, info = data.get("names"), data.get("shapes"), data.get("info", {})
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad("'names' is not a list of parameter names")
    if len(set(names)) != len(names):
        raise bad(f"'names' lists {next(n for n in names if names.count(n) > 1)!r} twice")
    if (not isinstance(shapes, list) or len(shapes) != len(names)
            or not all(isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in s) for s in shapes)):
        raise bad(f"'shapes' is not one list of non-negative sizes per name ({len(names)})")
    if not isinstance(info, dict):
        raise bad("'info' is not an object")
    return names, [tuple(s) for s in shapes], info
