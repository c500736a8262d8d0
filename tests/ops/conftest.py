"""Fixtures for the op tests: every CPU path this machine supports."""
from __future__ import annotations

import pytest

from mft_engine import ops

from .sample_inputs import PATHS


@pytest.fixture(params=PATHS)
def cpu_path(request):
    """Runs the test once per supported CPU path (scalar, avx2, avx512 as available), restoring the
    previous path afterwards."""
    with ops.use_cpu_path(request.param):
        yield request.param
