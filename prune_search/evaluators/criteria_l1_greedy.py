"""Li et al.'s greedy multi-layer L1 filter norm (``l1_greedy``).

Li et al. (2017, "Pruning Filters for Efficient ConvNets", §3.2) rank the filters of a layer
by their L1 norm and name two ways of doing so across layers. "Independent" (criterion ``l1``)
sums every input kernel of a filter. "Greedy" does not count the kernels that read channels
already removed from earlier layers. Here groups are visited in forward order (the position
of their root layer in the traced forward pass). Group ``G``'s filter norm sums ``|w|`` over
the kernels whose input channels survive in every group visited before ``G``. Then ``G`` is
pruned to its keep count at ``reference_ratio`` (decoded like a gene, strategy ``min``) and
its removed channels mask the inputs of its consumers for the groups after it.

Importance is computed once per study, before any candidate exists, so the earlier layers'
removals are those of one reference ratio for every group. The default is Li et al.'s 50 %.
"""

import torch
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators.channels import to_root
from prune_search.evaluators.selection import select_channels
from prune_search.space import PruningSpace

REFERENCE_RATIO = 0.5

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def _kernel_norms(module: nn.Module) -> Tensor:
    """``Σ|w|`` per (output, input) pair: float64 ``[C_out, C_in / groups]`` on the CPU."""
    weight = module.weight.detach().abs().to("cpu", torch.float64)
    return weight.flatten(2).sum(2) if weight.dim() > 2 else weight


def _maskable(module: nn.Module) -> bool:
    """Whether input index ``i`` of ``module`` is column ``i`` of its weight (not a grouped conv)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1)


def l1_greedy(model: nn.Module, space: PruningSpace, *, reference_ratio: float = REFERENCE_RATIO, **_: object) -> dict:
    """Greedy L1 filter norms per group (float64 ``[n]``, summed over the group's Conv/Linear members).

    ``reference_ratio`` in (0, 1] is the keep ratio every earlier group is assumed to be
    pruned to when a later group's filters are measured.
    """
    if not 0 < reference_ratio <= 1:
        raise PruneSearchError(f"the l1_greedy reference ratio must be in (0, 1], got {reference_ratio}")
    modules = dict(model.named_modules())
    position = {layer.name: index for index, layer in enumerate(space.structure.layers)}
    order = sorted(range(len(space)), key=lambda g: position[space.groups[g].name])
    keep = space.keep_counts(torch.full((1, len(space)), float(reference_ratio), dtype=torch.float64))[0]
    alive: dict[str, Tensor] = {}
    out: dict[str, Tensor] = {}
    for g in order:
        group = space.groups[g]
        score = torch.zeros(group.size, dtype=torch.float64)
        for member in group.members:
            module = modules[member.module]
            if not member.out or not isinstance(module, _WEIGHTED):
                continue
            norms = _kernel_norms(module)
            if member.module in alive:
                norms = norms * alive[member.module]
            score += to_root(group, member, norms.sum(1))
        out[group.name] = score
        removed = torch.ones(group.size, dtype=torch.bool)
        removed[select_channels(score, "min", int(keep[g]))] = False
        for member in group.members:
            module = modules[member.module]
            if member.out or not _maskable(module):
                continue
            mask = alive.setdefault(member.module, torch.ones(module.weight.shape[1], dtype=torch.float64))
            mask[torch.tensor(member.idxs)[removed[torch.tensor(member.root_idxs)]]] = 0.0
    return out
