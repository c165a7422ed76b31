"""Fine-tuning one candidate: physical pruning of the base model, then KD (or CE) training.

Shared by the finalizer, the proxy validation and the quality benchmark, so every compared
model gets the very same recipe.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_search.data import DatasetBundle
from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, Importance, PruningPlan, materialize
from prune_search.finalize.distill import kd_loss
from prune_search.space import CandidateBatch, PruningSpace
from prune_search.training.fit import EpochRecord, FitResult, Recipe, fit
from prune_search.training.loop import cross_entropy, evaluate
from prune_search.training.masks import check_sparsity, magnitude_masks
from prune_search.training.sparse_size import storage_report


@dataclass(frozen=True)
class FinalizeConfig:
    """Fine-tuning recipe; KD and ``--no-kd`` runs share everything but the loss.

    ``sparsity`` in [0, 1): share of every pruned Conv/Linear weight but the classifier's
    zeroed by magnitude masks that are held through fine-tuning (0: dense).
    """

    epochs: int = 15
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    kd: bool = True
    temperature: float = 4.0
    alpha: float = 0.9
    seed: int = 0
    sparsity: float = 0.0

    def validate(self) -> None:
        check_sparsity(self.sparsity)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise PruneSearchError("--epochs and --batch-size must be at least 1 and --lr positive")
        if not 0 <= self.alpha <= 1 or self.temperature <= 0:
            raise PruneSearchError("--kd-alpha must be in [0, 1] and --kd-temperature positive")

    def recipe(self) -> Recipe:
        return Recipe(self.epochs, self.batch_size, self.lr, self.momentum, self.weight_decay, self.seed)


@dataclass
class Tuned:
    """A fine-tuned candidate: the model (best val epoch, eval mode), its plan and metrics.

    Accuracies are in [0, 1] (test measured once, on the best val epoch); MACs and params
    are the exact analytic counts per sample; ``wall_s`` is training time in seconds;
    ``sparse``: nonzeros and dense/CSR/bitmask bytes (``prune_search.training.sparse_size.storage_report``)
    when the config asked for a sparsity.
    """

    model: nn.Module
    plan: PruningPlan
    best_epoch: int
    val_acc: float
    test_acc: float
    macs: int
    params: int
    wall_s: float
    history: list[EpochRecord]
    sparse: dict[str, Any] | None = None

    def metrics(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "val_acc": self.val_acc,
            "test_acc": self.test_acc,
            "macs": self.macs,
            "params": self.params,
            "wall_s": self.wall_s,
        }


def train_network(
    net: nn.Module,
    bundle: DatasetBundle,
    config: FinalizeConfig,
    state_file: Path,
    *,
    teacher: nn.Module,
    identity: dict[str, Any],
    resume: bool,
    device: torch.device,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> FitResult:
    """Train ``net`` (in place, on ``device``) by ``config``'s recipe and load its best val epoch into it.

    The loss is KD from ``teacher`` (the unpruned model, left unchanged) or plain cross-entropy
    with ``config.kd`` off; ``state_file``, ``identity`` and ``resume`` work as in ``fit``.
    """
    loss = kd_loss(teacher.to(device).eval(), config.temperature, config.alpha) if config.kd else cross_entropy
    fitted = fit(
        net.to(device),
        bundle,
        config.recipe(),
        state_file,
        identity=identity,
        resume=resume,
        loss_fn=loss,
        device=device,
        progress=progress,
        on_epoch_end=on_epoch_end,
        after_step=after_step,
    )
    net.load_state_dict(fitted.best_state)
    return fitted


def fine_tune(
    base: nn.Module,
    space: PruningSpace,
    importance: Importance,
    candidate: CandidateBatch,
    bundle: DatasetBundle,
    config: FinalizeConfig,
    state_file: Path,
    *,
    identity: dict[str, Any],
    device: torch.device,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> Tuned:
    """Prune ``base`` (on ``device``, unchanged) to ``candidate`` and fine-tune it by ``config``.

    The teacher of KD is ``base`` itself. ``state_file`` holds the per-epoch state, so a call
    with the same ``identity`` resumes an interrupted run.
    """
    config.validate()
    base = base.to(device).eval()
    student, plan = materialize(base, space, importance, candidate)
    masks = None
    if config.sparsity > 0:
        example = torch.zeros(2, *plan.input_shape[1:], device=device)
        masks = magnitude_masks(student, example, config.sparsity)
        masks.apply(student)
    fitted = train_network(
        student,
        bundle,
        config,
        state_file,
        teacher=base,
        identity=identity,
        resume=True,
        device=device,
        progress=progress,
        on_epoch_end=on_epoch_end,
        after_step=masks.hook(student) if masks else None,
    )
    test = evaluate(student, bundle.loader("test", 512), device)
    macs, params = (int(t[0]) for t in CostModel(space)(candidate))
    return Tuned(
        student.eval(),
        plan,
        fitted.best_epoch,
        fitted.val_acc,
        test.accuracy,
        macs,
        params,
        fitted.history[-1].wall_s,
        fitted.history,
        storage_report(student, masks.masks) if masks else None,
    )
