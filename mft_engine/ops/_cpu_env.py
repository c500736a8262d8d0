"""A bad MFT_CPU_PATH, kept as a ConfigError for the first use of the kernels instead of an import failure.

The extension resolves MFT_CPU_PATH when it is imported and refuses a bad value with ImportError. Raised
there, that error would escape before the `mft` command's error handling exists (the package imports the
extension), so the user would get a traceback. mft_engine.ops therefore imports the extension without the
bad value (kernels would run on the widest path), records the refusal here, and every op wrapper, cpu_path()
and load_model() call `check_cpu_path_environment()`, which raises it as one line: nothing ever runs on a
path the user did not ask for.
"""
from __future__ import annotations

from ..errors import ConfigError

ENV_VAR = "MFT_CPU_PATH"
ALLOWED = ("scalar", "avx2", "avx512", "auto")


class CpuPathError(ConfigError):
    """MFT_CPU_PATH names no CPU path, or one this CPU lacks."""


#: The extension's refusal of MFT_CPU_PATH, or None when the value is fine (or unset).
env_error: str | None = None


def check_cpu_path_environment() -> None:
    """Raise CpuPathError when MFT_CPU_PATH held a value the kernels refused at import; else nothing.

    Cheap (one global lookup): the op wrappers call it on every call. `set_cpu_path()` clears the error,
    since an explicit choice replaces the environment's.
    """
    if env_error is not None:
        raise CpuPathError(f"{env_error} (unset {ENV_VAR} to use the widest path this CPU supports)")
