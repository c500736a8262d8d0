"""Scorers with ground truth: per-parameter scores, the curvature they need, and a check against reality.

Layout: `base` (the Scorer interface and registry), `inputs` (what a scorer sees, its typed options),
`objective` (losses over fixed batches), `registry` (the built-in scorers); `scorers/` (one file per
scorer, and the statistics they share), `curvature/` (Hessian / Gauss-Newton products, solvers, the
Woodbury form, fits saved by name), `ground_truth/` (the removal oracle, its hand-written BERT forward,
and judging scorers against it).

Sign convention (DESIGN.md): a signed scorer returns the predicted change of the scoring-half loss when
the parameter is set to zero (negative: removal helps); an unsigned scorer returns predicted harm ≥ 0.
"""
from .base import Scorer, get_scorer, register_scorer, scorer_names
from .inputs import MissingStatisticError, ScoringInputs
from .objective import Objective, eval_objective, math_attention

__all__ = ["MissingStatisticError", "Objective", "Scorer", "ScoringInputs", "eval_objective", "get_scorer",
           "math_attention", "register_scorer", "scorer_names"]
