"""What the optional kernel backends (Triton for CUDA, torch_xla for XLA) share: whether their package is
installed, found without importing it, and whether their kernels are registered in this process."""
from __future__ import annotations

import importlib.util


class OptionalBackend:
    """The registration state of one optional backend package (`name`): `installed()` looks it up once
    per call without importing it (recording why it is unusable), `mark_registered()` records that its
    kernels are in place; `registered` and `import_error` report both."""

    def __init__(self, package: str):
        self.package = package
        self.registered = False
        self.import_error: str | None = None

    def installed(self) -> bool:
        """Whether `package` can be imported, without importing it; False records why in `import_error`
        (a broken installation must not break the CPU package). Cost: one look-up of the installed packages."""
        try:
            found = importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError) as e:
            self.import_error = f"{type(e).__name__}: {e}"
            return False
        if not found:
            self.import_error = f"ModuleNotFoundError: No module named '{self.package}'"
        return found

    def mark_registered(self) -> bool:
        self.registered = True
        return True
