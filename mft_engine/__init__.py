"""mft_engine: find and remove the parameters of a fine-tuned transformer classifier that hurt it.

The public API lives here. Importing mft_engine loads the C++ extension `mft_engine._C` (which registers
the `torch.ops.mft.*` operators) and fails loudly if it is missing: rebuild with
`pip install --no-build-isolation -e .`.
"""
__version__ = "0.1.0"

from . import ops  # noqa: E402  (loads _C; an ImportError here means the extension was not built)
from .collect import Batch, GradientState, collect_gradients  # noqa: E402
from .config import RunConfig  # noqa: E402
from .data.config import DataConfig  # noqa: E402
from .selection_spec import SelectionSpec  # noqa: E402
from .errors import (ConfigError, DataError, MaskMismatchError, MftError, ModelError, NonFiniteError,  # noqa: E402
                     ResumeError)
from .experiments import run_study  # noqa: E402
from .masking import Mask, Selection, detrimental_mask, eligible_parameters, random_mask, select_detrimental  # noqa: E402
from .models import load_model  # noqa: E402
from .report.compare import compare_runs  # noqa: E402
from .experiments.influence_sweep import InfluenceConfig, removal_sweep  # noqa: E402
from .experiments.validate_scorer import ValidateConfig, validate_scorers  # noqa: E402
from .experiments.fit_influence import FitInfluenceConfig, fit_influence  # noqa: E402
from .scoring import Objective, Scorer, ScoringInputs, get_scorer, register_scorer, scorer_names  # noqa: E402
from .scoring.curvature.fit import fit_inverse, load_fit  # noqa: E402
from .scoring.ground_truth import RemovalOracle  # noqa: E402
from .scoring.curvature.hvp import batched_gnvp, gauss_newton_diagonal, gnvp, hvp  # noqa: E402
from .scoring.curvature.lowrank import LowRankGN, gauss_newton_lowrank, lowrank_solve  # noqa: E402
from .scoring.curvature.solvers import SolverError, conjugate_gradient, lissa  # noqa: E402
from .train import FinetuneConfig, finetune  # noqa: E402
from .train.sweep import SweepConfig, finetune_seeds, sweep  # noqa: E402

__all__ = [
    "Batch", "ConfigError", "DataConfig", "DataError", "FinetuneConfig", "GradientState", "Mask", "MaskMismatchError", "MftError", "ModelError",
    "NonFiniteError", "ResumeError", "RunConfig", "Selection", "SelectionSpec", "collect_gradients", "detrimental_mask",
    "eligible_parameters", "load_model", "ops", "random_mask", "run_study", "select_detrimental", "finetune",
    "SweepConfig", "compare_runs", "finetune_seeds", "sweep",
    "InfluenceConfig", "Objective", "RemovalOracle", "Scorer", "ScoringInputs", "SolverError", "ValidateConfig",
    "batched_gnvp", "conjugate_gradient", "fit_inverse", "gauss_newton_diagonal", "get_scorer", "gnvp", "hvp", "lissa",
    "load_fit", "register_scorer", "removal_sweep", "scorer_names", "validate_scorers",
    "LowRankGN", "gauss_newton_lowrank", "lowrank_solve",
    "FitInfluenceConfig", "fit_influence",
]
