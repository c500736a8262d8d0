"""Imports every built-in scorer file, which registers it (see base.register_scorer).

Adding a scorer: one file with a `@register_scorer` class, plus one import line here.
"""
from .scorers import (  # noqa: F401
    fisher_taylor,
    gradient,
    influence,
    magnitude,
    obs,
    ria,
    taylor,
    taylor2,
    taylor_train,
    wanda,
)
