"""Where every channel of a nested model is stored, and which stored channels a level uses.

The elastic checkpoint stores the base model with the channels of every group physically
permuted into keep-priority order, so that each level's channels are a prefix of that order
in every coupled layer dimension. An *axis* is one prunable dimension of one layer, named
``(module, side)`` with side ``"out"`` (output channels, or a norm layer's channels) or
``"in"`` (input channels). For an axis of size D:

- ``stored[axis]`` (int64 ``[D]``): the original channel held at each stored position;
- a level's index (int64 ``[d]``): the stored positions of the ``d`` channels the level
  keeps, in ascending ORIGINAL order, i.e. the order torch-pruning leaves in a model pruned
  to those channels, so a gathered level is the very model :func:`materialize` builds.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.space import PruningSpace
from prune_search.space.structure import Group, Member

Axis = tuple[str, str]
State = dict[str, Tensor]
LevelIndex = dict[Axis, Tensor]


@dataclass(frozen=True)
class TensorAxes:
    """The prunable dimensions of one state_dict entry: ``dims[i]`` is indexed by axis ``axes[i]``."""

    dims: tuple[int, ...]
    axes: tuple[Axis, ...]


def _tensor_dims(module: nn.Module, side: str) -> dict[str, int]:
    """Which of ``module``'s state entries a side indexes, and along which dimension."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return {name: 0 for name in ("weight", "bias", "running_mean", "running_var")}
    if isinstance(module, nn.Linear):
        return {"weight": 0, "bias": 0} if side == "out" else {"weight": 1}
    if isinstance(module, nn.modules.conv._ConvNd):
        out_dim, in_dim = (1, 0) if module.transposed else (0, 1)
        if side == "out":
            return {"weight": out_dim, "bias": 0}
        return {} if module.groups > 1 else {"weight": in_dim}
    raise PruneSearchError(
        f"layer '{type(module).__name__}' cannot be stored nested; only Conv, Linear and BatchNorm layers can"
    )


def _side(module: nn.Module, member: Member) -> str:
    return "out" if member.out or isinstance(module, nn.modules.batchnorm._BatchNorm) else "in"


def _root_table(group: Group, member: Member) -> Tensor:
    """Layer channels of each root channel, int64 ``[n, m]``, each row ascending."""
    idxs = torch.tensor(member.idxs, dtype=torch.int64)
    roots = torch.tensor(member.root_idxs, dtype=torch.int64)
    order = torch.argsort(roots * (int(idxs.max()) + 1) + idxs)
    return idxs[order].view(group.size, group.multiplicity(member))


class ChannelLayout:
    """Stored channel order of every axis, from the groups of ``space`` and one order per group.

    ``orders[group]`` (int64 ``[n]``, a permutation) is the group's keep-priority order in
    original root numbering; stored root position ``j`` holds root channel ``orders[group][j]``.
    ``model`` is any instance of the base architecture (only module types and shapes are read).
    """

    def __init__(self, model: nn.Module, space: PruningSpace, orders: dict[str, Tensor]) -> None:
        modules = dict(model.named_modules())
        self.space = space
        self.orders = {name: orders[name].to(torch.int64).cpu() for name in space.names}
        self._tables: dict[str, list[tuple[Axis, Tensor]]] = {}
        self.stored: dict[Axis, Tensor] = {}
        covered: dict[Axis, Tensor] = {}
        dims: dict[str, dict[int, Axis]] = {}
        for group in space.groups:
            order = self.orders[group.name]
            if sorted(order.tolist()) != list(range(group.size)):
                raise PruneSearchError(f"the channel order of group '{group.name}' is not a permutation")
            tables: list[tuple[Axis, Tensor]] = []
            for member in group.members:
                if group.partial(member):
                    raise PruneSearchError(
                        f"group '{group.name}' is split unevenly across layer '{member.module}' (a concatenation "
                        "or split), which an elastic checkpoint cannot nest"
                    )
                module = modules[member.module]
                axis = (member.module, _side(module, member))
                if any(a == axis for a, _ in tables):
                    continue
                for attr, dim in _tensor_dims(module, axis[1]).items():
                    tensor = getattr(module, attr, None)
                    if isinstance(tensor, Tensor):
                        dims.setdefault(f"{member.module}.{attr}", {})[dim] = axis
                        self.stored.setdefault(axis, torch.arange(tensor.shape[dim]))
                        covered.setdefault(axis, torch.zeros(tensor.shape[dim], dtype=torch.bool))
                if axis not in self.stored:
                    continue
                table = _root_table(group, member)
                positions = table.flatten()
                if bool(covered[axis][positions].any()):
                    raise PruneSearchError(f"layer dimension {axis} is shared by two groups and cannot be nested")
                covered[axis][positions] = True
                self.stored[axis][positions] = table[order].flatten()
                tables.append((axis, table))
            self._tables[group.name] = tables
        self.sizes = {axis: stored.numel() for axis, stored in self.stored.items()}
        self.keys = {key: TensorAxes(tuple(sorted(d)), tuple(d[i] for i in sorted(d))) for key, d in dims.items()}
        self._position = {axis: torch.argsort(stored) for axis, stored in self.stored.items()}

    def level_index(self, keep: dict[str, int]) -> LevelIndex:
        """Stored positions of the channels a level keeps (``keep[group]`` root channels), per axis."""
        removed: dict[Axis, list[Tensor]] = {}
        for group in self.space.groups:
            tail = self.orders[group.name][keep[group.name] :]
            for axis, table in self._tables[group.name]:
                removed.setdefault(axis, []).append(table[tail].flatten())
        index = {}
        for axis, size in self.sizes.items():
            kept = torch.ones(size, dtype=torch.bool)
            for part in removed.get(axis, []):
                kept[part] = False
            index[axis] = self._position[axis][kept.nonzero()[:, 0]]
        return index

    def permute(self, state: State) -> State:
        """A state_dict of the base model (original channel order) in stored order."""
        out = {}
        for key, tensor in state.items():
            spec = self.keys.get(key)
            if spec is not None:
                for dim, axis in zip(spec.dims, spec.axes, strict=True):
                    tensor = tensor.index_select(dim, self.stored[axis])
            out[key] = tensor.clone()
        return out

    def gather(self, key: str, tensor: Tensor, index: LevelIndex) -> Tensor:
        """The level's part of a stored entry, in the level's (original ascending) channel order."""
        spec = self.keys.get(key)
        if spec is None:
            return tensor.clone()
        for dim, axis in zip(spec.dims, spec.axes, strict=True):
            tensor = tensor.index_select(dim, index[axis])
        return tensor

    def scatter(self, key: str, stored: Tensor, value: Tensor, index: LevelIndex) -> None:
        """Write a level's entry ``value`` into the stored entry ``stored`` (in place)."""
        spec = self.keys.get(key)
        if spec is None:
            stored.copy_(value)
            return
        selectors: list[Tensor | slice] = [slice(None)] * (spec.dims[-1] + 1)
        for rank, (dim, axis) in enumerate(zip(spec.dims, spec.axes, strict=True)):
            shape = [1] * len(spec.dims)
            shape[rank] = -1
            selectors[dim] = index[axis].view(shape)
        stored[tuple(selectors)] = value

    def core_mask(self, key: str, shape: torch.Size, index: LevelIndex, core: LevelIndex) -> Tensor:
        """Bool ``shape``: True where a level's entry also belongs to the smaller level ``core``."""
        mask = torch.ones(shape, dtype=torch.bool)
        spec = self.keys.get(key)
        if spec is None:
            return mask
        for dim, axis in zip(spec.dims, spec.axes, strict=True):
            inside = torch.isin(index[axis], core[axis])
            view = [1] * len(shape)
            view[dim] = -1
            mask = mask & inside.view(view)
        return mask
