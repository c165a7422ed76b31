"""Simple pruning baselines at a MACs budget, as candidates of the study's space.

- ``uniform``: one keep ratio for every group (strategy ``min``), the largest that fits.
- ``global_min``: all channels of all groups ranked by importance in one list, the least
  important removed first until the budget is met (Molchanov et al.'s global ranking).
- ``global_median``: the same list, a window of ranks centred on the global median removed
  (the seed project's "global avg"), i.e. both tails kept.
- ``global_mean`` / ``global_max``: ``global_min`` with each group's importance divided by its
  mean / max first (Torch-Pruning's group normalisers), so groups are ranked on one scale.

Every group keeps at least the space's floor (no layer collapse), and each group's keep
count is the largest count of the space's grid at or below the one the rule asks for, so
the baseline is a valid candidate that ``materialize`` prunes with the shared selection
function: within a group, ``min`` keeps the most important channels and ``median`` both
tails, exactly as for the search's own candidates.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, Importance
from prune_search.space import CandidateBatch, PruningSpace

BASELINES = ("uniform", "global_min", "global_median", "global_mean", "global_max")
_STEPS = 48


def snap(space: PruningSpace, keep: Tensor) -> Tensor:
    """Per group, the largest keep count of the space's grid levels (at or above the group's smallest
    level) that is ≤ ``keep[g]``, else the group's floor; int64 ``[G]``."""
    levels = space.level_keep_counts()
    allowed = torch.arange(levels.shape[1])[None] >= space.min_levels()[:, None]
    fits = allowed & (levels <= keep.to(torch.int64)[:, None])
    below = torch.where(fits, levels, torch.zeros_like(levels)).max(1).values
    return torch.where(fits.any(1), below, space.floor())


def _largest_within(
    keep_of: Callable[[float], Tensor], strategy: int, space: PruningSpace, budget: int, lo: float, hi: float
) -> CandidateBatch | None:
    """Bisection over a family ``keep_of(t)`` whose MACs grow with ``t``: the largest that fits."""
    cost = CostModel(space)

    def candidate(t: float) -> CandidateBatch:
        keep = snap(space, keep_of(t))[None]
        return CandidateBatch(keep, torch.full_like(keep, strategy))

    def fits(t: float) -> bool:
        return int(cost(candidate(t))[0][0]) <= budget

    if not fits(lo):
        return None
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return candidate(lo)


def _normalised(vector: Tensor, normaliser: str | None) -> Tensor:
    """``vector`` divided by its mean or max (unchanged when that is 0 or ``normaliser`` is None)."""
    if normaliser is None:
        return vector
    scale = float(vector.mean() if normaliser == "mean" else vector.max())
    return vector / scale if scale > 0 else vector


def _global_removed(
    space: PruningSpace, importance: Importance, window: str, normaliser: str | None = None
) -> Callable[[float], Tensor]:
    """``keep_of(t)``: keep counts when a fraction ``1 − t`` of all channels is removed globally
    (each group's importance first divided by its ``normaliser``, ``mean`` or ``max``, if given)."""
    vectors = [_normalised(vector, normaliser) for vector in importance.vectors(space)]
    scores = torch.cat(vectors)
    owner = torch.cat([torch.full((v.numel(),), g, dtype=torch.int64) for g, v in enumerate(vectors)])
    order = torch.sort(scores, stable=True).indices
    ranked_owner = owner[order]
    total = scores.numel()
    sizes = space.sizes

    def keep_of(t: float) -> Tensor:
        removed = round((1 - t) * total)
        if window == "min":
            chosen = ranked_owner[:removed]
        else:
            start = (total - removed) // 2
            chosen = ranked_owner[start : start + removed]
        counts = torch.bincount(chosen, minlength=len(sizes))
        return sizes - counts

    return keep_of


def baseline(space: PruningSpace, importance: Importance, name: str, max_macs: int) -> CandidateBatch:
    """The ``name`` baseline (one of :data:`BASELINES`) with the most MACs ≤ ``max_macs`` (per sample)."""
    strategies = space.strategies
    if name == "uniform":

        def keep_of(ratio: float) -> Tensor:
            return space.keep_counts(torch.full((1, len(space)), ratio, dtype=torch.float64))[0]

        strategy, lo = "min", space.options.min_ratio
    elif name in ("global_min", "global_median"):
        strategy = name.removeprefix("global_")
        keep_of, lo = _global_removed(space, importance, strategy), 0.0
    elif name in ("global_mean", "global_max"):
        strategy = "min"
        keep_of, lo = _global_removed(space, importance, strategy, name.removeprefix("global_")), 0.0
    else:
        raise PruneSearchError(f"unknown baseline '{name}'; baselines are {', '.join(BASELINES)}")
    if strategy not in strategies:
        raise PruneSearchError(f"baseline {name} needs strategy '{strategy}', which this study's space leaves out")
    found = _largest_within(keep_of, strategies.index(strategy), space, max_macs, lo, 1.0)
    if found is None:
        smallest = int(CostModel(space)(space.smallest())[0][0])
        raise PruneSearchError(
            f"no {name} candidate fits {max_macs:,} MACs; the smallest this space allows has {smallest:,}"
        )
    return found
