"""Checks shared by the exactness tests: a pruned model's own counts, and norms that show a wrong channel."""

import torch
from torch import nn

from prune_search.evaluators import CostModel, PruningPlan, compute_importance, materialize
from prune_search.space import CandidateBatch, PruningSpace
from prune_search.space.flops import counted_macs


def reference_cost(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """MACs (``counted_macs``) and parameters of a physically pruned model on ``example`` ``[B, C, H, W]``."""
    return counted_macs(model.eval(), example), sum(p.numel() for p in model.parameters())


def randomised(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with non-trivial norm statistics and affine parameters, so a wrong channel shows."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm) and module.weight is not None:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def pruned_exactly(
    model: nn.Module, space: PruningSpace, example: torch.Tensor, candidates: CandidateBatch, criterion: str = "l2"
) -> list[tuple[nn.Module, PruningPlan]]:
    """Materialise every candidate, assert its counted MACs/params are the analytic ones, return (model, plan)s."""
    macs, params = CostModel(space)(candidates)
    importance = compute_importance(model, space, criterion, batches=[(example, torch.zeros(len(example)).long())])
    pruned = []
    for row in range(len(candidates)):
        model_row, plan = materialize(model, space, importance, candidates[row])
        assert reference_cost(model_row, example[:1]) == (int(macs[row]), int(params[row])), row
        pruned.append((model_row, plan))
    return pruned


def fully_modelled(model: nn.Module, space: PruningSpace, example: torch.Tensor) -> bool:
    """Whether the analytic cost of the unpruned model is the counted one with no unmodelled MACs."""
    cost = CostModel(space)
    return cost.unmodelled_macs == 0 and cost.base() == reference_cost(model, example[:1])
