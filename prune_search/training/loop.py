"""One training epoch and one evaluation pass, shared by every trainer (baseline, fine-tune)."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]
StepHook = Callable[[torch.optim.Optimizer], None]


def cross_entropy(logits: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
    """Plain CE between ``logits [B, K]`` and ``targets [B]`` (``inputs`` unused)."""
    return F.cross_entropy(logits, targets)


@dataclass(frozen=True)
class Metrics:
    """Mean loss per sample and top-1 accuracy in [0, 1] over ``samples`` samples."""

    loss: float
    accuracy: float
    samples: int


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    *,
    loss_fn: LossFn = cross_entropy,
    description: str = "train",
    progress: bool = True,
    after_step: StepHook | None = None,
) -> Metrics:
    """One pass over ``loader`` in train mode; the scheduler steps once per batch.

    ``after_step(optimizer)`` runs right after every ``optimizer.step()`` (e.g. to re-apply
    pruning masks to the weights and the optimizer state).
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=description, leave=False, disable=not progress, dynamic_ncols=True)
    for inputs, targets in bar:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        logits = model(inputs)
        loss = loss_fn(logits, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(optimizer)
        scheduler.step()
        batch = targets.numel()
        total_loss += loss.item() * batch
        correct += int((logits.argmax(1) == targets).sum())
        seen += batch
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return Metrics(total_loss / max(seen, 1), correct / max(seen, 1), seen)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> Metrics:
    """Mean CE loss and top-1 accuracy of ``model`` (eval mode) over ``loader``."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        logits = model(inputs)
        total_loss += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += int((logits.argmax(1) == targets).sum())
        seen += targets.numel()
    return Metrics(total_loss / max(seen, 1), correct / max(seen, 1), seen)
