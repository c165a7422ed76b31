"""Second-order (Optimal Brain Damage) saliency of removing a channel (``hessian``).

Give every channel ``c`` of a group a gate ``s_c`` (1 in the trained model; see
:mod:`prune_search.evaluators.gates`). Removing the channel moves its gate by ``δ = −1``. OBD
(LeCun et al. 1990) drops the first-order term at a trained minimum, so the loss increase is
``½ · H_cc · δ² = ½ · H_cc``. The diagonal Hessian is approximated by the empirical Fisher
``H_cc ≈ E_n[(∂ℓ_n/∂s_c)²]``, accumulated per sample, as in Theis et al. 2018 ("Faster gaze
prediction with dense networks and Fisher pruning"):

    saliency_c = ½ · E_n[(∂ℓ_n/∂s_c)²]    (nats; ℓ_n the cross-entropy of sample n)

Squaring the mean gradient of a batch, ``(E_n[∂ℓ_n/∂s_c])²``, is not this. Near a minimum the
per-sample gradients cancel in the mean, so that square is close to 0 for every channel. That
was the bug of seed 000 and of torch-pruning 1.6.1's ``HessianImportance`` used without
per-sample accumulation.
"""

import torch
from torch import nn

from prune_search.evaluators.channels import Batches
from prune_search.evaluators.gates import mean_gate_statistic
from prune_search.space import PruningSpace


def hessian(model: nn.Module, space: PruningSpace, *, batches: Batches, device: torch.device, **_: object) -> dict:
    """OBD saliency per group (float64 ``[n]``, nats) from per-sample gate gradients on ``batches``."""
    return mean_gate_statistic(model, space, batches, device, lambda g: 0.5 * g.square().sum(0), "hessian")
