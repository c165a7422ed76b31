"""Peer methods' width choices at a MACs budget, as candidates of the study's space.

- ``tp_global``: Torch-Pruning's global pruning (``MetaPruner(global_pruning=True)``) with
  group-normalised L2 magnitude importance (``GroupMagnitudeImportance(normalizer="mean")``).
- ``tp_global_taylor``: the same with group-normalised first-order Taylor importance
  (``GroupTaylorImportance(normalizer="mean")``, gradients of the cross-entropy on the first
  ``TAYLOR_BATCHES`` train batches).

Only the widths are taken from the peer: each group keeps the largest count of the space's grid
at or below the peer's width (at least its floor), and the kept channels are chosen by the
study's own importance with strategy ``min``, like every other candidate. The peer's MACs stop
falling past a pruning ratio of about 0.8 (it keeps groups whole), so the ratio is found by a
coarse scan of ``SCAN`` ratios, then a bisection inside the first interval that crosses the
budget, both against the study's exact MACs count.
"""

import copy

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel
from prune_search.evidence.context import StudyBase
from prune_search.search.baselines import snap
from prune_search.space import CandidateBatch

PEERS = ("tp_global", "tp_global_taylor")
SCAN = 20
BISECT_STEPS = 8
TAYLOR_BATCHES = 4


def _peer_widths(base: StudyBase, method: str, ratio: float) -> torch.Tensor:
    """Keep count per group ``[G]`` that Torch-Pruning's global pruning leaves at ``ratio``."""
    space = base.handle.space
    model = copy.deepcopy(base.model).cpu().eval()
    batches = [batch for _, batch in zip(range(TAYLOR_BATCHES), base.bundle.loader("train", 128), strict=False)]
    if method == "tp_global_taylor":
        importance = tp.importance.GroupTaylorImportance(normalizer="mean")
        model.zero_grad()
        for inputs, targets in batches:
            F.cross_entropy(model(inputs), targets).backward()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2, normalizer="mean")
    pruned_outputs = {member.module for group in space.groups for member in group.members if member.out}
    ignored = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear) and name not in pruned_outputs
    ]
    pruner = tp.pruner.MetaPruner(
        model, batches[0][0][:2], importance, global_pruning=True, pruning_ratio=ratio, ignored_layers=ignored
    )
    pruner.step()
    modules = dict(model.named_modules())
    widths = []
    for group in space.groups:
        root = modules[group.name]
        widths.append(root.out_channels if isinstance(root, nn.modules.conv._ConvNd) else root.out_features)
    return torch.tensor(widths, dtype=torch.int64)


def peer_candidate(base: StudyBase, method: str, max_macs: int) -> CandidateBatch:
    """The ``method`` peer's widths (one of :data:`PEERS`) with the most MACs ≤ ``max_macs`` (per sample)."""
    if method not in PEERS:
        raise PruneSearchError(f"unknown peer '{method}'; peers are {', '.join(PEERS)}")
    space = base.handle.space
    if "min" not in space.strategies:
        raise PruneSearchError(f"peer {method} keeps channels by strategy 'min', which this study's space leaves out")
    cost = CostModel(space)

    def candidate(ratio: float) -> tuple[CandidateBatch, int]:
        keep = snap(space, _peer_widths(base, method, ratio))[None]
        batch = CandidateBatch(keep, torch.full_like(keep, space.strategies.index("min")))
        return batch, int(cost(batch)[0][0])

    ratios = [i / SCAN for i in range(SCAN)]
    scanned = [candidate(r) for r in ratios]
    first = next((i for i, (_, macs) in enumerate(scanned) if macs <= max_macs), None)
    if first is None:
        least = min(macs for _, macs in scanned)
        raise PruneSearchError(
            f"{method} reaches no fewer than {least:,} MACs, above the budget of {max_macs:,}; choose a larger budget"
        )
    if first == 0:
        return scanned[0][0]
    lo, hi, best = ratios[first - 1], ratios[first], scanned[first][0]
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) / 2
        batch, macs = candidate(mid)
        if macs <= max_macs:
            hi, best = mid, batch
        else:
            lo = mid
    return best
