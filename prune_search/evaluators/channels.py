"""What every importance criterion shares: calibration batches and the member → root channel map."""

from collections.abc import Iterable

import torch
from torch import Tensor

from prune_search.space.structure import Group, Member

Batches = Iterable[tuple[Tensor, Tensor]]


def to_root(group: Group, member: Member, values: Tensor) -> Tensor:
    """Sum a member's per-channel ``values`` (``[..., C_layer]``) onto root channels ``[..., n]``."""
    picked = values[..., member.idxs]
    out = torch.zeros(*values.shape[:-1], group.size, dtype=values.dtype, device=values.device)
    return out.index_add_(-1, torch.tensor(member.root_idxs, device=values.device), picked)
