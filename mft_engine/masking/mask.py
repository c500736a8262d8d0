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

    def __len__(self) -> int:
        return int(self.indices.numel())

    def _params(self, model: torch.nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        out = []
        for n, shape in zip(self.names, self.shapes):
            if n not in params:
                raise MaskMismatchError(f"the mask names parameter {n!r}, which the model does not have")
            if tuple(params[n].shape) != tuple(shape):
                raise MaskMismatchError(f"the mask expects {n} of shape {tuple(shape)}, the model has "
                                        f"{tuple(params[n].shape)}")
            out.append(params[n])
        return out

    def apply(self, model: torch.nn.Module) -> "Mask":
        """Zero the masked parameters in place (mft::zero_masked_), keeping their values for restore()."""
        params = self._params(model)
        with torch.no_grad():
            saved = ops.zero_masked_([p.data for p in params], self.indices)
        if self.values is None:
            self.values = saved
        return self

    def restore(self, model: torch.nn.Module) -> None:
        """Write the saved values back (mft::restore_); exact, bit for bit."""
        if self.values is None:
            raise MaskMismatchError("this mask was never applied and holds no saved values to restore")
        params = self._params(model)
        with torch.no_grad():
            ops.restore_([p.data for p in params], self.indices, self.values)

    def per_tensor_counts(self) -> dict[str, int]:
        """How many indices fall into each named tensor (O(k) via searchsorted)."""
        numels = torch.tensor([0] + [int(torch.Size(s).numel()) for s in self.shapes], dtype=torch.int64)
        bounds = torch.cumsum(numels, 0)
        counts = torch.searchsorted(self.indices, bounds[1:]) - torch.searchsorted(self.indices, bounds[:-1])
        return {n: int(c) for n, c in zip(self.names, counts.tolist())}

    def save(self, path: str | Path) -> None:
        """Write indices, saved values and metadata (names, shapes, info) to a safetensors file."""
        from safetensors.torch import save_file

        tensors = {"indices": self.indices.contiguous()}
        if self.values is not None:
            tensors["values"] = self.values.contiguous()
        meta = {"mft_mask": json.dumps({"names": self.names, "shapes": [list(s) for s in self.shapes],
                                        "info": self.info})}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "Mask":
        """Read a mask written by save()."""
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise MaskMismatchError(f"mask file {p} does not exist")
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = (f.metadata() or {}).get("mft_mask")
                if meta is None:
                    raise MaskMismatchError(f"{p} is not an mft mask (no mft_mask metadata)")
                info = json.loads(meta)
                indices = f.get_tensor("indices")
                values = f.get_tensor("values") if "values" in f.keys() else None
        except MaskMismatchError:
            raise
        except Exception as e:
            raise MaskMismatchError(f"mask file {p} could not be read ({type(e).__name__})") from None
        return cls(info["names"], [tuple(s) for s in info["shapes"]], indices, values, info.get("info", {}))
