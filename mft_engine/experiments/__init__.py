"""Each study as one pipeline function over data, models, collect, masking, evaluate and report."""
from .mft_study import StudyResult, run_study

__all__ = ["StudyResult", "run_study"]
