"""Per-group keep ratios from a sensitivity scan and an accuracy-drop threshold."""

from collections.abc import Iterable

from prune_search.sensitivity.result import ScanRow

SEED_SCALES = (0.5, 0.75, 1.25, 1.5)
_TOLERANCE = 1e-9


def allocate(rows: Iterable[ScanRow], max_drop: float) -> dict[str, float]:
    """Per group, the smallest scanned keep ratio within ``max_drop`` points, monotone-safe.

    A ratio qualifies only if its val-accuracy drop and that of every larger scanned ratio
    of the same group are at most ``max_drop`` percentage points, so a noisy dip below the
    threshold further down never hides a failure above it. A group whose largest scanned
    ratio already fails keeps all its channels (1.0).
    """
    by_group: dict[str, list[ScanRow]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    out = {}
    for group, items in by_group.items():
        chosen = 1.0
        for row in sorted(items, key=lambda r: r.ratio, reverse=True):
            if row.drop_pts > max_drop + _TOLERANCE:
                break
            chosen = min(chosen, row.ratio)
        out[group] = chosen
    return out


def scaled(ratios: dict[str, float], scales: Iterable[float] = SEED_SCALES) -> list[dict[str, float]]:
    """Variants of an allocation at other sizes, one per scale: every group's pruned fraction
    ``1 − r`` multiplied by the scale (ratios clipped to [0, 1]); unpruned groups stay unpruned."""
    return [{g: round(min(1.0, max(0.0, 1 - s * (1 - r))), 6) for g, r in ratios.items()} for s in scales]
