"""What every importance criterion shares: calibration batches, the member → root channel map and
per-filter scoring of weights."""

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from prune_search.space import PruningSpace
from prune_search.space.structure import Group, Member

Batches = Iterable[tuple[Tensor, Tensor]]


def to_root(group: Group, member: Member, values: Tensor) -> Tensor:
    """Sum a member's per-channel ``values`` (``[..., C_layer]``) onto root channels ``[..., n]``."""
    picked = values[..., member.idxs]
    out = torch.zeros(*values.shape[:-1], group.size, dtype=values.dtype, device=values.device)
    return out.index_add_(-1, torch.tensor(member.root_idxs, device=values.device), picked)


def filter_scores(model: nn.Module, space: PruningSpace, score: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """Per group (float64 ``[n]``, CPU): Σ over its Conv/Linear output members of ``score(weight)``.

    ``score`` maps a weight ``[C_out, ...]`` to one float64 CPU value per filter ``[C_out]``.
    """
    modules = dict(model.named_modules())
    out = {}
    for group in space.groups:
        total = torch.zeros(group.size, dtype=torch.float64)
        for member in group.members:
            module = modules[member.module]
            if member.out and isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
                total += to_root(group, member, score(module.weight.detach()))
        out[group.name] = total
    return out
