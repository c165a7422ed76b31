"""The epoch loop every trainer shares: SGD + per-batch cosine, val selection, per-epoch state, resume.

An epoch's shuffling, augmentation and dropout draw from a seed derived from (seed, epoch),
so a run resumed from its state file ends with the same weights as an uninterrupted one.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_search.data import DatasetBundle
from prune_search.errors import PruneSearchError
from prune_search.training.checkpoint import TRAIN_STATE, read_checkpoint, save_checkpoint
from prune_search.training.loop import LossFn, StepHook, cross_entropy, evaluate, train_one_epoch


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings: SGD (Nesterov) with a cosine schedule over exactly ``epochs``."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    seed: int


@dataclass(frozen=True)
class EpochRecord:
    """Metrics after one epoch (1-based), losses per sample, accuracies in [0, 1], wall time in s."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    wall_s: float


@dataclass(frozen=True)
class FitResult:
    """The epoch chosen on val, its weights (CPU), and every epoch's record."""

    best_epoch: int
    val_acc: float
    val_loss: float
    best_state: dict[str, torch.Tensor]
    history: list[EpochRecord]


def _difference(stored: dict[str, Any], asked: dict[str, Any]) -> str | None:
    for key in asked:
        if stored.get(key) != asked[key]:
            return f"{key}={stored.get(key)!r} in the checkpoint, {key}={asked[key]!r} now"
    return None


def fit(
    model: nn.Module,
    bundle: DatasetBundle,
    recipe: Recipe,
    state_file: Path,
    *,
    identity: dict[str, Any],
    resume: bool,
    loss_fn: LossFn = cross_entropy,
    device: torch.device,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    after_step: StepHook | None = None,
) -> FitResult:
    """Train ``model`` (already on ``device``) for ``recipe.epochs``, keeping the best epoch on val.

    ``identity`` (plain data) describes the run; resuming from ``state_file`` requires the
    same identity, so a run is never continued with other settings. ``after_step(optimizer)``
    runs after every optimizer step (see :func:`train_one_epoch`).
    """
    steps = len(bundle.loader("train", recipe.batch_size, drop_last=True))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.momentum > 0,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs * steps)
    history: list[EpochRecord] = []
    best: dict[str, Any] = {"epoch": 0, "val_acc": -1.0, "val_loss": float("inf"), "state_dict": None}
    wall_before = 0.0
    if resume and state_file.is_file():
        state = read_checkpoint(state_file, TRAIN_STATE)
        difference = _difference(state["config"], identity)
        if difference:
            raise PruneSearchError(
                f"--resume with a different configuration ({difference}); "
                "rerun with the original flags or use --overwrite"
            )
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = [EpochRecord(**record) for record in state["history"]]
        best = state["best"]
        wall_before = float(state["wall_s"])
    started = time.perf_counter()
    val_loader = bundle.loader("val", 512)
    for epoch in range(len(history) + 1, recipe.epochs + 1):
        epoch_seed = recipe.seed * 1_000_003 + epoch
        torch.manual_seed(epoch_seed)
        train_loader = bundle.loader(
            "train", recipe.batch_size, shuffle=True, augment=True, seed=epoch_seed, drop_last=True
        )
        lr = optimizer.param_groups[0]["lr"]
        trained = train_one_epoch(
            model,
            train_loader,
            optimizer,
            scheduler,
            device,
            loss_fn=loss_fn,
            description=f"epoch {epoch}/{recipe.epochs}",
            progress=progress,
            after_step=after_step,
        )
        val = evaluate(model, val_loader, device)
        record = EpochRecord(
            epoch,
            trained.loss,
            trained.accuracy,
            val.loss,
            val.accuracy,
            lr,
            wall_before + time.perf_counter() - started,
        )
        history.append(record)
        if (val.accuracy, -val.loss) > (best["val_acc"], -best["val_loss"]):
            best = {
                "epoch": epoch,
                "val_acc": val.accuracy,
                "val_loss": val.loss,
                "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        save_checkpoint(
            {
                "format": TRAIN_STATE,
                "config": identity,
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": [asdict(r) for r in history],
                "best": best,
                "wall_s": record.wall_s,
            },
            state_file,
        )
        if on_epoch_end is not None:
            on_epoch_end(record)
    return FitResult(best["epoch"], best["val_acc"], best["val_loss"], best["state_dict"], history)
