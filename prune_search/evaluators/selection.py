"""Which channels a strategy keeps: the one selection function every stage calls."""

import torch
from torch import Tensor

from prune_search.errors import PruneSearchError


def keep_order(scores: Tensor, strategy: str) -> Tensor:
    """Channels of one group in keep-priority order (int64 ``[n]``); a keep count k keeps the first k.

    ``scores`` is the group's importance ``[n]`` (finite). ``min`` keeps the most important
    channels (ties: lower index first). ``median`` prunes the channels whose importance rank is
    closest to the median rank, i.e. keeps both tails: priority is the distance of the rank
    from the median rank, and of two channels at equal distance the more important one wins.
    """
    n = scores.numel()
    scores = scores.to(torch.float64)
    if strategy == "min":
        return torch.sort(scores, descending=True, stable=True).indices
    if strategy == "median":
        ascending = torch.sort(scores, stable=True).indices
        rank = torch.empty(n, dtype=torch.int64)
        rank[ascending] = torch.arange(n)
        priority = (2 * rank - (n - 1)).abs() * 2 + (2 * rank > n - 1).to(torch.int64)
        return torch.sort(priority, descending=True, stable=True).indices
    raise PruneSearchError(f"unknown strategy '{strategy}'; strategies are min, median")


def select_channels(scores: Tensor, strategy: str, keep: int) -> Tensor:
    """The ``keep`` channel indices a strategy keeps, ascending (int64 ``[keep]``)."""
    if not 1 <= keep <= scores.numel():
        raise PruneSearchError(f"keep count {keep} is outside 1..{scores.numel()}")
    return torch.sort(keep_order(scores, strategy)[:keep]).values
