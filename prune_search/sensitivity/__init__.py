"""Per-group sensitivity scan on the val split, automatic keep-ratio allocation, use in a study."""

from prune_search.sensitivity.allocate import allocate, scaled
from prune_search.sensitivity.result import SENSITIVITY_USES, ScanRow, SensitivityResult, read_sensitivity
from prune_search.sensitivity.scan import min_candidate, parse_ratios, scan_groups
from prune_search.sensitivity.study import create_or_join_with_scan, scan_clash, with_scan

__all__ = [
    "SENSITIVITY_USES",
    "ScanRow",
    "SensitivityResult",
    "allocate",
    "create_or_join_with_scan",
    "min_candidate",
    "parse_ratios",
    "read_sensitivity",
    "scaled",
    "scan_clash",
    "scan_groups",
    "with_scan",
]
