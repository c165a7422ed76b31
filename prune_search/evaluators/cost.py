"""Exact analytic MACs and params of pruned candidates, batched, from keep counts alone.

Conventions (checked against the physically pruned model in the tests):
- MACs: multiply-accumulates for one input sample as torch counts them
  (:func:`~prune_search.space.flops.counted_macs`: ``FlopCounterMode`` total ÷ 2, fused CPU attention
  kernels included): Conv and Linear layers and attention's two matrix products (q·kᵀ and
  weights·v) modelled per layer; bias adds and element-wise ops (norms, activations, softmax,
  pooling, residual adds) are not counted. Counted MACs outside the modelled layers (e.g. the
  matrix products of an attention block whose heads stay whole) are measured once at the trace
  (``Structure.counted_macs``) and added as a constant, :attr:`CostModel.unmodelled_macs`.
- params: every parameter of the pruned model (weights, biases, BatchNorm/LayerNorm/GroupNorm
  affine parameters, unwrapped parameters such as ConvNeXt's layer scale; not BN running
  statistics, which are buffers), i.e. ``sum(p.numel() for p in model.parameters())``.

Each layer width is ``base + Σ share · keep[group]`` over the groups that touch it (``share``: the
member's channels per root channel, a fraction ``len(idxs) / size`` for one branch of an uneven
concatenation, exact because keep counts are then multiples of the group's blocks),
and both totals are sums of ``coef · width_a · width_b // divisor`` terms (the divisor is a
grouped convolution's ``groups``, which divides its pruned input width), so a population
``[P, G]`` costs a few gathers on the device, exactly (int64 arithmetic).
"""

import torch
from torch import Tensor

from prune_search.space import CandidateBatch, PruningSpace
from prune_search.space.structure import ATTENTION, BATCHNORM, CONV, LINEAR, NORM, PARAMETER, Layer


class CostModel:
    """MACs and params of candidates of ``space``, on ``device``.

    ``unmodelled_macs``: the counted MACs of the unpruned model that no modelled layer accounts for
    (0 for a model whose every counted op is modelled, and for spaces stored before it was measured).
    """

    def __init__(self, space: PruningSpace, device: torch.device | str = "cpu") -> None:
        self.space = space
        self.device = torch.device(device)
        dims: dict[tuple[str, str], int] = {}
        widths: list[int] = []

        def add_dim(layer: Layer, side: str, width: int) -> int:
            dims[(layer.name, side)] = len(widths)
            widths.append(width)
            return dims[(layer.name, side)]

        macs_terms: list[tuple[int, int, int, int]] = []  # (coef, dim a, dim b, divisor)
        param_terms: list[tuple[int, int, int, int]] = []
        fixed_params = space.structure.other_params
        one = -1
        attention = [layer for layer in space.structure.layers if layer.kind == ATTENTION]
        for layer in space.structure.layers:
            if layer.kind == ATTENTION:
                continue
            if layer.kind in (BATCHNORM, NORM, PARAMETER) or layer.depthwise:
                dim = add_dim(layer, "out", layer.out_channels)
                dims[(layer.name, "in")] = dim
                if layer.kind == BATCHNORM:
                    param_terms.append((2 if layer.affine else 0, dim, one, 1))
                elif layer.kind in (NORM, PARAMETER):
                    param_terms.append((layer.kernel, dim, one, 1))
                else:
                    macs_terms.append((layer.kernel * layer.positions, dim, one, 1))
                    param_terms.append((layer.kernel + int(layer.bias), dim, one, 1))
                continue
            assert layer.kind in (CONV, LINEAR)
            out = add_dim(layer, "out", layer.out_channels)
            inp = add_dim(layer, "in", layer.in_channels)
            macs_terms.append((layer.kernel * layer.positions, out, inp, layer.groups))
            param_terms.append((layer.kernel, out, inp, layer.groups))
            param_terms.append((int(layer.bias), out, one, 1))
        for layer in attention:  # as wide as the input of the projection it feeds
            macs_terms.append((layer.kernel * layer.positions, dims[(layer.follows, "in")], one, 1))
        base = torch.tensor([*widths, 1], dtype=torch.int64)
        contrib_dims, contrib_groups, contrib_mult, contrib_size = [], [], [], []
        seen: set[tuple[int, int]] = set()
        for g, group in enumerate(space.groups):
            for member in [*group.members, *group.parameters]:
                dim = dims[(member.module, "out" if member.out else "in")]
                if (dim, g) in seen:
                    continue
                seen.add((dim, g))
                base[dim] -= len(member.idxs)
                contrib_dims.append(dim)
                contrib_groups.append(g)
                contrib_mult.append(len(member.idxs))
                contrib_size.append(group.size)
        one_index = len(widths)

        def terms(raw: list[tuple[int, int, int, int]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            coef = torch.tensor([t[0] for t in raw], dtype=torch.int64)
            a = torch.tensor([t[1] for t in raw], dtype=torch.int64)
            b = torch.tensor([one_index if t[2] == one else t[2] for t in raw], dtype=torch.int64)
            divisor = torch.tensor([t[3] for t in raw], dtype=torch.int64)
            return coef.to(self.device), a.to(self.device), b.to(self.device), divisor.to(self.device)

        self._base = base.to(self.device)
        self._dims = torch.tensor(contrib_dims, dtype=torch.int64, device=self.device)
        self._groups = torch.tensor(contrib_groups, dtype=torch.int64, device=self.device)
        self._mult = torch.tensor(contrib_mult, dtype=torch.int64, device=self.device)
        self._size = torch.tensor(contrib_size, dtype=torch.int64, device=self.device)
        self._macs = terms(macs_terms)
        self._params = terms(param_terms)
        self._fixed_params = fixed_params
        self.unmodelled_macs = 0
        counted = space.structure.counted_macs
        if counted is not None:
            self.unmodelled_macs = counted - int(self(space.full())[0][0])

    def widths(self, batch: CandidateBatch) -> Tensor:
        """Width of every layer dimension per candidate ``[P, D + 1]`` (last column: 1)."""
        keep = batch.keep.to(self.device)
        widths = self._base.repeat(keep.shape[0], 1)
        share = (keep[:, self._groups] * self._mult).div(self._size, rounding_mode="floor")
        return widths.index_add_(1, self._dims, share)

    @staticmethod
    def _total(widths: Tensor, terms: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        coef, a, b, divisor = terms
        return (widths[:, a] * widths[:, b] * coef).div(divisor, rounding_mode="floor").sum(1)

    def __call__(self, batch: CandidateBatch) -> tuple[Tensor, Tensor]:
        """(MACs ``[P]``, params ``[P]``), int64, per input sample."""
        widths = self.widths(batch)
        macs = self._total(widths, self._macs) + self.unmodelled_macs
        return macs, self._total(widths, self._params) + self._fixed_params

    def base(self) -> tuple[int, int]:
        """MACs and params of the unpruned model."""
        macs, params = self(self.space.full())
        return int(macs[0]), int(params[0])
