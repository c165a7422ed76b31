"""The baseline trainer: SGD + cosine over exactly the requested epochs, best epoch on val.

Every epoch writes a training-state checkpoint beside the output, so an interrupted run
resumes where it stopped and ends with the same weights as an uninterrupted one.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from prune_search.data import DataSpec, load_dataset
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec, build_model, resolve_factory
from prune_search.threads import set_threads_for
from prune_search.training.checkpoint import model_payload, save_checkpoint
from prune_search.training.fit import EpochRecord, Recipe, fit
from prune_search.training.loop import evaluate


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
    model = build_model(spec, trusted_factory=config.model).to(torch_device)
    set_threads_for(
        model, torch.zeros(1, bundle.in_channels, bundle.image_size, bundle.image_size, device=torch_device)
    )
    recipe = Recipe(config.epochs, config.batch_size, config.lr, config.momentum, config.weight_decay, config.seed)
    result = fit(
        model,
        bundle,
        recipe,
        state_file,
        identity=config.to_dict(),
        resume=resume,
        device=torch_device,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )
    model.load_state_dict(result.best_state)
    test = evaluate(model, bundle.loader("test", 512), torch_device)
    wall = result.history[-1].wall_s
    save_checkpoint(
        model_payload(
            spec,
            config.data,
            result.best_state,
            train=config.to_dict(),
            metrics={
                "best_epoch": result.best_epoch,
                "val_acc": result.val_acc,
                "val_loss": result.val_loss,
                "test_acc": test.accuracy,
                "test_loss": test.loss,
                "wall_s": wall,
            },
            history=[asdict(r) for r in result.history],
        ),
        out,
    )
    state_file.unlink(missing_ok=True)
    return TrainResult(out, spec, result.best_epoch, result.val_acc, test.accuracy, test.loss, wall, result.history)
