"""Checks shared by the exactness tests: a pruned model's own counts, and norms that show a wrong channel."""

import torch
from torch import nn

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
