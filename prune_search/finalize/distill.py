"""Knowledge-distillation loss with a frozen teacher."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_search.training.loop import LossFn


def kd_loss(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """``α·T²·KL(teacher ‖ student) + (1 − α)·CE(student, y)`` on softened logits (Hinton et al.).

    The teacher (the unpruned model) stays frozen in eval mode (its forward runs without
    autograd, and the teacher object is otherwise left as it is, so it can be pruned again) and
    sees the same augmented batch as the student.
    """
    teacher.eval()

    def loss(logits: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
        with torch.no_grad():
            soft_targets = F.softmax(teacher(inputs) / temperature, dim=1)
        distill = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft_targets, reduction="batchmean")
        return alpha * temperature**2 * distill + (1 - alpha) * F.cross_entropy(logits, targets)

    return loss
