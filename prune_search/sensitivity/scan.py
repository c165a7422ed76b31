"""The scan: one group pruned at a time, val accuracy of the masked model (optionally BN-recalibrated)."""

from collections.abc import Callable, Sequence

import torch

from prune_search.errors import PruneSearchError
from prune_search.evaluators import AdaptiveBNEvaluator
from prune_search.sensitivity.result import ScanRow
from prune_search.space import CandidateBatch, PruningSpace, SpaceOptions

STRATEGY = "min"


def parse_ratios(text: str, options: SpaceOptions) -> list[float]:
    """``"0.1,0.2,0.5"`` → ascending distinct keep ratios, each in (0, 1] and on the space's ratio grid."""
    try:
        ratios = sorted({float(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise PruneSearchError(
            f"--ratios takes comma-separated keep ratios such as 0.1,0.5,0.9, got '{text}'"
        ) from None
    if not ratios:
        raise PruneSearchError("--ratios needs at least one keep ratio, e.g. 0.1,0.5,0.9")
    outside = [r for r in ratios if not 0 < r <= 1]
    if outside:
        raise PruneSearchError(f"--ratios values must be keep ratios in (0, 1], got {outside[0]:g}")
    grid = options.ratios
    off = [r for r in ratios if min(abs(r - g) for g in grid) > 1e-9]
    if off:
        raise PruneSearchError(
            f"--ratios value {off[0]:g} is not on the keep-ratio grid: {grid[0]:g} to 1 in steps of "
            f"{options.ratio_step:g} (set by --min-ratio and --ratio-step)"
        )
    return ratios


def min_candidate(space: PruningSpace, keep: torch.Tensor) -> CandidateBatch:
    """One candidate keeping ``keep[g]`` channels of every group (int64 ``[G]``), chosen by strategy ``min``."""
    if STRATEGY not in space.strategies:
        raise PruneSearchError(f"the sensitivity scan uses strategy '{STRATEGY}', which this space leaves out")
    keep = keep.to(torch.int64)[None]
    return CandidateBatch(keep, torch.full_like(keep, space.strategies.index(STRATEGY)))


def scan_groups(
    evaluator: AdaptiveBNEvaluator, ratios: Sequence[float], on_step: Callable[[], object] | None = None
) -> tuple[float, list[ScanRow]]:
    """The base val accuracy (the unpruned model, same procedure) and a row per group × ratio.

    Each row keeps ``space.keep_counts(ratio)`` channels of one group (its most important ones
    by the evaluator's importance) and every channel of the others. ``on_step`` is called after
    each evaluation (``len(space) · len(ratios) + 1`` calls).
    """
    space = evaluator.space
    base = float(evaluator(min_candidate(space, space.sizes))[0])
    if on_step is not None:
        on_step()
    grid = torch.tensor(list(ratios), dtype=torch.float64)[:, None].expand(-1, len(space))
    keep = space.keep_counts(grid)
    rows = []
    for g, group in enumerate(space.groups):
        for r, ratio in enumerate(ratios):
            counts = space.sizes.clone()
            counts[g] = keep[r, g]
            accuracy = float(evaluator(min_candidate(space, counts))[0])
            rows.append(
                ScanRow(group.name, group.size, float(ratio), int(keep[r, g]), accuracy, 100 * (base - accuracy))
            )
            if on_step is not None:
                on_step()
    return base, rows
