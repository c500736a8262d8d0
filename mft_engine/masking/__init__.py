"""Masking: which parameters are eligible, the detrimental selection, and undoable Masks."""
from .eligibility import check_exclude_patterns, eligible_parameters, is_excluded
from .mask import Mask
from .selection import DetrimentalSelector, Selection, detrimental_mask, fusable, random_mask, select_detrimental

__all__ = ["Mask", "Selection", "check_exclude_patterns", "detrimental_mask", "eligible_parameters", "is_excluded",
           "random_mask", "select_detrimental", "DetrimentalSelector", "fusable"]
