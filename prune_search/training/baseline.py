"""The baseline trainer: SGD + cosine over exactly the requested epochs, best epoch on val.

Every epoch writes a training-state checkpoint beside the output, so an interrupted run
resumes where it stopped and ends with the same weights as an uninterrupted one.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from prune_search.data import DataSpec, load_dataset
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec, build_model, resolve_factory
from prune_search.training.checkpoint import (
    TRAIN_STATE,
    model_payload,
    read_checkpoint,
    save_checkpoint,
)
from prune_search.training.loop import evaluate, train_one_epoch


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a baseline run's result (the device does not).

    ``lr`` is the peak learning rate of the cosine schedule, which decays to 0 over
    ``epochs`` epochs, stepped per batch; SGD with Nesterov ``momentum``.
    """

    model: str = "resnet20"
    model_options: dict[str, Any] = field(default_factory=dict)
    data: DataSpec = field(default_factory=DataSpec)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return cls(**{**data, "data": DataSpec.from_dict(data["data"])})

    def validate(self) -> None:
        """One-line errors for values no run can use."""
        if self.epochs < 1:
            raise PruneSearchError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise PruneSearchError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr <= 0:
            raise PruneSearchError(f"--lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class EpochRecord:
    """Metrics after one epoch (1-based), losses per sample, accuracies in [0, 1]."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    wall_s: float


@dataclass(frozen=True)
class TrainResult:
    """A finished run: the chosen epoch, its val and test metrics, total wall time (s)."""

    out: Path
    model_spec: ModelSpec
    best_epoch: int
    val_acc: float
    test_acc: float
    test_loss: float
    wall_s: float
    history: list[EpochRecord]


def state_path(out: Path) -> Path:
    """Where the per-epoch training state of the run writing ``out`` lives."""
    return out.with_name(f"{out.stem}.state{out.suffix or '.pt'}")


def _config_difference(stored: dict[str, Any], asked: dict[str, Any]) -> str | None:
    for key in asked:
        if stored.get(key) != asked[key]:
            return f"{key}={stored.get(key)!r} in the checkpoint, {key}={asked[key]!r} now"
    return None


def _check_outputs(out: Path, state: Path, resume: bool, overwrite: bool) -> None:
    if overwrite:
        return
    if resume:
        if not state.is_file():
            done = " (that run already finished)" if out.is_file() else ""
            raise PruneSearchError(f"nothing to resume: {state} does not exist{done}; drop --resume to start a new run")
        return
    if state.is_file():
        raise PruneSearchError(
            f"{state} holds an interrupted run; pass --resume to continue it or --overwrite to start over"
        )
    if out.is_file():
        raise PruneSearchError(f"{out} already exists; pass --overwrite to replace it or choose another --out")


def train_baseline(
    config: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    download: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train ``config`` and write the best-on-val model checkpoint to ``out``.

    Test accuracy is measured once, on the chosen epoch's weights, at the end.
    """
    config.validate()
    resolve_factory(config.model)
    state_file = state_path(out)
    _check_outputs(out, state_file, resume, overwrite)
    bundle = load_dataset(config.data, download=download)
    spec = ModelSpec(
        config.model, bundle.in_channels, bundle.num_classes, bundle.image_size, dict(config.model_options)
    )
    torch_device = resolve_device(device)
    torch.manual_seed(config.seed)
    model = build_model(spec).to(torch_device)
    steps = len(bundle.loader("train", config.batch_size, drop_last=True))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps)
    history: list[EpochRecord] = []
    best: dict[str, Any] = {"epoch": 0, "val_acc": -1.0, "val_loss": float("inf"), "state_dict": None}
    wall_before = 0.0
    if resume and state_file.is_file():
        state = read_checkpoint(state_file, TRAIN_STATE)
        difference = _config_difference(state["config"], config.to_dict())
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
    for epoch in range(len(history) + 1, config.epochs + 1):
        epoch_seed = config.seed * 1_000_003 + epoch
        torch.manual_seed(epoch_seed)
        train_loader = bundle.loader(
            "train", config.batch_size, shuffle=True, augment=True, seed=epoch_seed, drop_last=True
        )
        lr = optimizer.param_groups[0]["lr"]
        fit = train_one_epoch(
            model,
            train_loader,
            optimizer,
            scheduler,
            torch_device,
            description=f"epoch {epoch}/{config.epochs}",
            progress=progress,
        )
        val = evaluate(model, val_loader, torch_device)
        record = EpochRecord(
            epoch,
            fit.loss,
            fit.accuracy,
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
                "config": config.to_dict(),
                "model": spec.to_dict(),
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
    model.load_state_dict(best["state_dict"])
    test = evaluate(model, bundle.loader("test", 512), torch_device)
    wall = history[-1].wall_s
    save_checkpoint(
        model_payload(
            spec,
            config.data,
            best["state_dict"],
            train=config.to_dict(),
            metrics={
                "best_epoch": best["epoch"],
                "val_acc": best["val_acc"],
                "val_loss": best["val_loss"],
                "test_acc": test.accuracy,
                "test_loss": test.loss,
                "wall_s": wall,
            },
            history=[asdict(r) for r in history],
        ),
        out,
    )
    state_file.unlink(missing_ok=True)
    return TrainResult(out, spec, best["epoch"], best["val_acc"], test.accuracy, test.loss, wall, history)
