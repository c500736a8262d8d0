"""Each study as one pipeline function over data, models, collect, masking, evaluate and report."""
from .mft_study import Progress, StudyResult, run_study

__all__ = ["Progress", "StudyResult", "run_study"]
