"""Per-group sensitivity scan on the val split, automatic keep-ratio allocation, use in a study."""

from prune_search.sensitivity.allocate import allocate, scaled
from prune_search.sensitivity.result import SENSITIVITY_USES, ScanRow, SensitivityResult, read_sensitivity
from prune_search.sensitivity.scan import min_candidate, parse_ratios, scan_groups

__all__ = [
    "SENSITIVITY_USES",
    "ScanRow",
    "SensitivityResult",
    "allocate",
    "min_candidate",
    "parse_ratios",
    "read_sensitivity",
    "scaled",
    "scan_groups",
]
