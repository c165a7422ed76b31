"""Option types and helpers shared by every ``prune-search`` command module."""

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import optuna
import typer
from tqdm import tqdm

from prune_search.data import DataSpec
from prune_search.errors import PruneSearchError
from prune_search.storage import DEFAULT_URL, ENV_VAR
from prune_search.training import EpochRecord

ModelOpt = Annotated[str, typer.Option("--model", help="Zoo name, tv:NAME or package.module:factory.")]
ExpectedModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="The model the checkpoint or study holds (checked); a package.module:factory stored in a file or "
        "study is built only when named here.",
    ),
]
ModelOptions = Annotated[
    list[str] | None,
    typer.Option("--model-option", help="Factory option KEY=VALUE (JSON value), repeatable, e.g. head=512."),
]
DatasetOpt = Annotated[
    str, typer.Option("--dataset", help="digits, fashion-mnist, mnist, cifar10, cifar100 or imagefolder:PATH.")
]
DataRootOpt = Annotated[Path | None, typer.Option("--data-root", help="Folder holding the dataset's files.")]
ValFractionOpt = Annotated[float, typer.Option("--val-fraction", help="Share of train held out as val.")]
SplitSeedOpt = Annotated[int, typer.Option("--split-seed", help="Seed of the train/val(/test) split.")]
ImageSizeOpt = Annotated[int | None, typer.Option("--image-size", help="ImageFolder image size in px (default 224).")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Allow torchvision to download mnist/cifar.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]

# The fine-tuning recipe (``finalize.tune.FinalizeConfig``), the same flags in every command that trains.
LrOpt = Annotated[float, typer.Option("--lr", help="Peak SGD learning rate (cosine schedule).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Samples per batch.")]
KdOpt = Annotated[
    bool, typer.Option("--kd/--no-kd", help="Distil from the unpruned model, or plain cross-entropy, same schedule.")
]
KdTemperatureOpt = Annotated[float, typer.Option("--kd-temperature", help="KD temperature T.")]
KdAlphaOpt = Annotated[float, typer.Option("--kd-alpha", help="KD weight α (1−α on cross-entropy).")]
TuneSeedOpt = Annotated[int, typer.Option("--seed", help="Fine-tuning seed.")]


def parse_model_options(items: list[str] | None) -> dict[str, Any]:
    """``["head=512", "hidden=[128,32]"]`` → ``{"head": 512, "hidden": [128, 32]}``."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PruneSearchError(f"--model-option '{item}' must look like KEY=VALUE, e.g. head=512")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def data_spec(
    dataset: str, data_root: Path | None, val_fraction: float, split_seed: int, image_size: int | None
) -> DataSpec:
    return DataSpec(
        name=dataset,
        root=str(data_root) if data_root else None,
        val_fraction=val_fraction,
        split_seed=split_seed,
        image_size=image_size,
    )


def print_epoch(record: EpochRecord) -> None:
    tqdm.write(
        f"epoch {record.epoch:3d}  train loss {record.train_loss:.4f} acc {record.train_acc:.4f}  "
        f"val loss {record.val_loss:.4f} acc {record.val_acc:.4f}  lr {record.lr:.4g}  {record.wall_s:.1f}s",
        file=sys.stderr,
    )


StudyOpt = Annotated[str, typer.Option("--study", help="Study name (created if missing, joined if present).")]
StorageOpt = Annotated[
    str | None, typer.Option("--storage", help=f"Storage URL (else ${ENV_VAR}, else {DEFAULT_URL}).")
]
FormatOpt = Annotated[str, typer.Option("--format", help="table, json or csv.")]


def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
