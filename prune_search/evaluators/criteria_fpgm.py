"""Redundancy of filters: Filter Pruning via Geometric Median (``fpgm``, He et al., CVPR 2019).

A filter close to the geometric median of its layer's filters can be represented by the
others, so it is redundant. FPGM scores filter ``i`` of a layer with ``m`` filters
``w_1 … w_m`` (flattened rows of the weight) by ``Σ_j ‖w_i − w_j‖₂``, the sum of its Euclidean
distances to the layer's other filters (the objective the geometric median minimises, taken
at ``w_i``). A filter with a low score lies near the median and is pruned first by ``min``.
Two identical filters have distance 0 to each other, so a duplicated filter is ranked below
a distinct one whatever their norms; this is what separates FPGM from ``l1``/``l2``.
"""

import torch
from torch import Tensor, nn

from prune_search.evaluators.channels import filter_scores
from prune_search.space import PruningSpace


def distance_sums(weight: Tensor) -> Tensor:
    """``Σ_j ‖w_i − w_j‖₂`` per filter ``i`` of ``weight`` ``[C_out, ...]``: float64 ``[C_out]``."""
    rows = weight.detach().to("cpu", torch.float64).flatten(1)
    return torch.cdist(rows, rows).sum(1)


def fpgm(model: nn.Module, space: PruningSpace, **_: object) -> dict:
    """FPGM scores per group (float64 ``[n]``): each Conv/Linear output member's distance sums,
    summed onto the group's root channels."""
    return filter_scores(model, space, distance_sums)
