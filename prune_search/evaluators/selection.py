"""Which channels a strategy keeps: the one selection function every stage calls."""

import torch
from torch import Tensor

from prune_search.errors import PruneSearchError


def _order(scores: Tensor, strategy: str) -> Tensor:
    """Keep-priority order of ``scores`` ``[n]`` under ``strategy``, ignoring any channel blocks."""
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


def keep_order(scores: Tensor, strategy: str, blocks: int = 1, aligned: bool = False) -> Tensor:
    """Channels of one group in keep-priority order (int64 ``[n]``); a keep count k keeps the first k.

    ``scores`` is the group's importance ``[n]`` (finite). ``min`` keeps the most important
    channels (ties: lower index first). ``median`` prunes the channels whose importance rank is
    closest to the median rank, i.e. keeps both tails: priority is the distance of the rank
    from the median rank, and of two channels at equal distance the more important one wins.

    A group split into ``blocks`` contiguous channel blocks (:attr:`~prune_search.space.Group.blocks`)
    is ordered so that every multiple of ``blocks`` keeps the same number of channels in each block:
    with ``aligned``, the strategy ranks the block positions by their scores summed over the blocks
    and each position brings its channel of every block; otherwise it ranks the channels of each
    block on their own and the order takes the best remaining channel of every block in turn.
    """
    if blocks == 1:
        return _order(scores, strategy)
    width = scores.numel() // blocks
    offsets = torch.arange(blocks) * width
    table = scores.reshape(blocks, width)
    if aligned:
        return (_order(table.sum(0), strategy)[:, None] + offsets[None]).reshape(-1)
    per_block = torch.stack([_order(row, strategy) for row in table])
    return (per_block + offsets[:, None]).T.reshape(-1)


def select_channels(scores: Tensor, strategy: str, keep: int, blocks: int = 1, aligned: bool = False) -> Tensor:
    """The ``keep`` channel indices a strategy keeps, ascending (int64 ``[keep]``); see :func:`keep_order`."""
    if not 1 <= keep <= scores.numel():
        raise PruneSearchError(f"keep count {keep} is outside 1..{scores.numel()}")
    if keep % blocks:
        raise PruneSearchError(f"keep count {keep} is not a multiple of the group's {blocks} channel blocks")
    return torch.sort(keep_order(scores, strategy, blocks, aligned)[:keep]).values
