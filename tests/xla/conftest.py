"""The XLA tests run only where torch_xla imports (tests/xla/run.sh builds that environment, torch 2.9.0 +
torch_xla 2.9.0, and runs them with PJRT_DEVICE=CPU); elsewhere every module here is skipped."""
from __future__ import annotations

import pytest

from mft_engine.ops import xla as mft_xla


@pytest.fixture(scope="session")
def device():
    """The XLA device, with mft's XLA kernels registered."""
    torch_xla = pytest.importorskip("torch_xla")
    assert mft_xla.register(), mft_xla.import_error()
    return torch_xla.device()


@pytest.fixture(params=["f64", "f32"])
def arithmetic(request):
    """Runs the test in each arithmetic: "f64" (CPU/GPU XLA devices) and "f32" (the TPU's, forced on CPU)."""
    mft_xla.set_arithmetic(request.param)
    yield request.param
    mft_xla.set_arithmetic(None)
