"""Masking: which parameters are eligible, the detrimental selection, and undoable Masks."""
from .eligibility import eligible_parameters, is_excluded
from .mask import Mask
from .selection import Selection, detrimental_mask, random_mask, select_detrimental

__all__ = ["Mask", "Selection", "detrimental_mask", "eligible_parameters", "is_excluded", "random_mask",
           "select_detrimental"]
