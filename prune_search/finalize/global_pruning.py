"""Torch-Pruning's global pruning as width choices of the study's space, at a MACs budget.

- ``tp_global``: ``MetaPruner(global_pruning=True)`` with group-normalised L2 magnitude importance
  (``GroupMagnitudeImportance(normalizer="mean")``).
- ``tp_global_taylor``: the same with group-normalised first-order Taylor importance
  (``GroupTaylorImportance(normalizer="mean")``: |w · ∂L/∂w| of every coupled parameter, averaged over the
  group's members and divided by the group's mean), the gradients of the cross-entropy summed over the
  train batches given (never val or test).

Only the widths are taken: each group keeps the largest count of the space's grid at or below the pruned
model's width (at least its floor), and the kept channels are chosen by the study's own importance with
strategy ``min``, like every other candidate. Torch-Pruning's MACs stop falling past a pruning ratio of
about 0.8 (it keeps groups whole), so a plain bisection over [0, 1] can land on a broken model: the ratio is
found by a coarse scan of :data:`SCAN` ratios, then a bisection inside the first interval that crosses the
budget, both against the study's exact MACs count.

The trained budget pick adds ``tp_global_taylor`` to its pool (:mod:`~prune_search.finalize.rerank`);
``compare`` runs both as peers.
"""

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import Tensor, nn

from prune_search.data import DatasetBundle
from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel
from prune_search.search.baselines import snap
from prune_search.space import CandidateBatch, PruningSpace

GLOBAL_PRUNERS = ("tp_global", "tp_global_taylor")
SCAN = 20
BISECT_STEPS = 8
TAYLOR_BATCHES = 4  # train batches whose cross-entropy gradients feed tp_global_taylor
TAYLOR_BATCH_SIZE = 128


def taylor_batches(bundle: DatasetBundle) -> list[tuple[Tensor, Tensor]]:
    """The first :data:`TAYLOR_BATCHES` train batches of :data:`TAYLOR_BATCH_SIZE`, in the split's order."""
    loader = bundle.loader("train", TAYLOR_BATCH_SIZE)
    return [batch for _, batch in zip(range(TAYLOR_BATCHES), loader, strict=False)]


def group_widths(model: nn.Module, space: PruningSpace) -> Tensor:
    """Width ``[G]`` (int64) of each group of ``space`` in ``model``, a pruned copy of the base model, in root
    channels: its root module's output count over the outputs per root channel (3 · head_dim for a group of
    attention heads)."""
    modules = dict(model.named_modules())
    widths = []
    for group in space.groups:
        root = modules[group.name]
        outputs = root.out_channels if isinstance(root, nn.modules.conv._ConvNd) else root.out_features
        widths.append(outputs // group.multiplicity(group.root()))
    return torch.tensor(widths, dtype=torch.int64)


class GlobalPruner:
    """Torch-Pruning's global pruning of the base ``model`` (left unchanged) under one of :data:`GLOBAL_PRUNERS`;
    ``batches`` are train batches ``(x [B, ...], y [B])`` (the first :data:`TAYLOR_BATCHES` give the Taylor
    gradients; the first image traces the model)."""

    def __init__(self, space: PruningSpace, model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], method: str):
        if method not in GLOBAL_PRUNERS:
            raise PruneSearchError(f"unknown global pruner '{method}'; choose one of {', '.join(GLOBAL_PRUNERS)}")
        if "min" not in space.strategies:
            raise PruneSearchError(f"{method} keeps channels by strategy 'min', which this study's space leaves out")
        self.space, self.method = space, method
        self.example = batches[0][0][:2].cpu()
        self.model = copy.deepcopy(model).cpu().eval()
        self.model.zero_grad()
        if method == "tp_global_taylor":
            for inputs, targets in batches[:TAYLOR_BATCHES]:
                F.cross_entropy(self.model(inputs.cpu()), targets.cpu()).backward()
        self.cost = CostModel(space)

    def widths(self, ratio: float) -> Tensor:
        """Width ``[G]`` per group that global pruning at ``ratio`` (of all channels, in [0, 1)) leaves."""
        model = copy.deepcopy(self.model)
        for copied, original in zip(model.parameters(), self.model.parameters(), strict=True):
            copied.grad = None if original.grad is None else original.grad.clone()  # deepcopy leaves them behind
        if self.method == "tp_global_taylor":
            importance = tp.importance.GroupTaylorImportance(normalizer="mean")
        else:
            importance = tp.importance.GroupMagnitudeImportance(p=2, normalizer="mean")
        pruned_outputs = {member.module for group in self.space.groups for member in group.members if member.out}
        ignored = [
            module
            for name, module in model.named_modules()
            if isinstance(module, nn.modules.conv._ConvNd | nn.Linear) and name not in pruned_outputs
        ]
        pruner = tp.pruner.MetaPruner(
            model, self.example, importance, global_pruning=True, pruning_ratio=ratio, ignored_layers=ignored
        )
        pruner.step()
        return group_widths(model, self.space)

    def candidate(self, ratio: float) -> tuple[CandidateBatch, int]:
        """The space's candidate ``[1, G]`` of :meth:`widths` at ``ratio`` (snapped to the grid) and its MACs."""
        keep = snap(self.space, self.widths(ratio))[None]
        batch = CandidateBatch(keep, torch.full_like(keep, self.space.strategies.index("min")))
        return batch, int(self.cost(batch)[0][0])

    def within(self, max_macs: int) -> CandidateBatch:
        """The candidate with the most MACs ≤ ``max_macs`` (per sample) that a scanned-then-bisected ratio gives."""
        ratios = [i / SCAN for i in range(SCAN)]
        scanned = [self.candidate(r) for r in ratios]
        first = next((i for i, (_, macs) in enumerate(scanned) if macs <= max_macs), None)
        if first is None:
            least = min(macs for _, macs in scanned)
            raise PruneSearchError(
                f"{self.method} reaches no fewer than {least:,} MACs, above the budget of {max_macs:,}; "
                "choose a larger budget"
            )
        if first == 0:
            return scanned[0][0]
        lo, hi, best = ratios[first - 1], ratios[first], scanned[first][0]
        for _ in range(BISECT_STEPS):
            mid = (lo + hi) / 2
            batch, macs = self.candidate(mid)
            if macs <= max_macs:
                hi, best = mid, batch
            else:
                lo = mid
        return best


def global_pruning_candidate(
    space: PruningSpace, model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], method: str, max_macs: int
) -> CandidateBatch:
    """``method``'s (one of :data:`GLOBAL_PRUNERS`) widths with the most MACs ≤ ``max_macs``: a candidate ``[1, G]``."""
    return GlobalPruner(space, model, batches, method).within(max_macs)
