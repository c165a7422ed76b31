"""Per-sample channel gates: how each sample's loss responds to removing one channel of a group.

Every consumer of a group's channels (a Conv/Linear member that takes them as input) gets a
gate ``g [B, C_in]`` of ones multiplying its input. Removing root channel ``c`` sets every
consumer gate of ``c`` to 0 at once, so the derivative of sample ``n``'s loss w.r.t. that one
shared gate is the sum of the consumer gate gradients mapped onto ``c``. With the model in eval
mode no sample's loss depends on another sample's gate, so one backward pass of the summed loss
gives the exact per-sample derivatives ``∂ℓ_n/∂g_c``.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators.channels import Batches, to_root
from prune_search.space import PruningSpace

Reduce = Callable[[Tensor], Tensor]


def _gate_input(name: str, gates: dict[str, Tensor]) -> Callable:
    def hook(module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        conv = isinstance(module, nn.modules.conv._ConvNd)
        channels = x.shape[1] if conv else x.shape[-1]
        gate = torch.ones(x.shape[0], channels, device=x.device, dtype=x.dtype, requires_grad=True)
        gates[name] = gate
        if conv:
            shaped = gate.view(x.shape[0], channels, *([1] * (x.dim() - 2)))
        else:
            shaped = gate.view(x.shape[0], *([1] * (x.dim() - 2)), channels)
        return (x * shaped, *args[1:])

    return hook


def mean_gate_statistic(
    model: nn.Module, space: PruningSpace, batches: Batches, device: torch.device, reduce: Reduce, criterion: str
) -> dict[str, Tensor]:
    """Mean over samples of ``reduce`` applied to per-sample gate gradients, per group.

    ``reduce`` maps the per-sample derivatives ``∂ℓ_n/∂g_c`` of one batch (float64
    ``[B, n]``, ℓ the cross-entropy in nats) to their sum over the batch ``[n]``; the result
    is that sum over all ``batches`` divided by the number of samples (float64 ``[n]`` per
    group). The model runs in eval mode and is left as it was; parameter gradients are not
    touched.
    """
    modules = dict(model.named_modules())
    consumers = {m.module for g in space.groups for m in g.members if not m.out}
    gates: dict[str, Tensor] = {}
    handles = [modules[name].register_forward_pre_hook(_gate_input(name, gates)) for name in consumers]
    totals = [torch.zeros(g.size, dtype=torch.float64, device=device) for g in space.groups]
    samples = 0
    was_training = model.training
    model.eval()
    try:
        for inputs, targets in batches:
            gates.clear()
            inputs, targets = inputs.to(device), targets.to(device)
            loss = F.cross_entropy(model(inputs), targets, reduction="sum")
            names = list(gates)
            grads = dict(zip(names, torch.autograd.grad(loss, [gates[n] for n in names]), strict=True))
            for total, group in zip(totals, space.groups, strict=True):
                per_sample = sum(  # a consumer the forward pass never calls (MultiheadAttention's out_proj) has none
                    to_root(group, m, grads[m.module].to(torch.float64))
                    for m in group.members
                    if not m.out and m.module in grads
                )
                total += reduce(per_sample)
            samples += targets.numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if samples == 0:
        raise PruneSearchError(f"criterion '{criterion}' needs at least one calibration batch")
    return {g.name: total / samples for g, total in zip(space.groups, totals, strict=True)}
