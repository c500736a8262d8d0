"""Scorers with ground truth: per-parameter scores, the curvature they need, and a check against reality.

Sign convention (DESIGN.md): a signed scorer returns the predicted change of the scoring-half loss when
the parameter is set to zero (negative: removal helps); an unsigned scorer returns predicted harm ≥ 0.
"""
from .base import Scorer, get_scorer, register_scorer, scorer_names
from .inputs import MissingStatisticError, ScoringInputs
from .objective import Objective, eval_objective, math_attention

__all__ = ["MissingStatisticError", "Objective", "Scorer", "ScoringInputs", "eval_objective", "get_scorer",
           "math_attention", "register_scorer", "scorer_names"]
