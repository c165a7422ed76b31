"""Option types and helpers of the commands that build models, load data or fine-tune (these import torch).

What every command shares and reading a study needs is torch-free: :mod:`~prune_search.cli.output` (how results
print) and :mod:`~prune_search.cli.storage_options` (``--study``, ``--storage``, ...).
"""

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from torch import nn
from tqdm import tqdm

from prune_search.data import DatasetBundle, DataSpec, available_datasets, load_dataset
from prune_search.data.catalog import IMAGEFOLDER_SIZE
from prune_search.errors import PruneSearchError
from prune_search.finalize.tune import FinalizeConfig
from prune_search.models import ModelSpec
from prune_search.training import EpochRecord, load_model, read_checkpoint

ModelOpt = Annotated[str, typer.Option("--model", help="Zoo name, tv:NAME, timm:NAME or package.module:factory.")]
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
DatasetOpt = Annotated[str, typer.Option("--dataset", help=f"One of {', '.join(available_datasets())}.")]
DataRootOpt = Annotated[Path | None, typer.Option("--data-root", help="Folder holding the dataset's files.")]
ValFractionOpt = Annotated[float, typer.Option("--val-fraction", help="Share of train held out as val.")]
SplitSeedOpt = Annotated[int, typer.Option("--split-seed", help="Seed of the train/val(/test) split.")]
ImageSizeOpt = Annotated[
    int | None, typer.Option("--image-size", help=f"ImageFolder image size in px (default {IMAGEFOLDER_SIZE}).")
]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Allow torchvision to download mnist/cifar.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
IgnoreLayersOpt = Annotated[
    str | None,
    typer.Option(
        "--ignore-layers",
        help="Never prune these layers: module names as in model.named_modules(), comma-separated, e.g. "
        "layer1.0.conv1,fc (a container stands for all it holds); their groups and every channel coupled to "
        "them stay whole.",
    ),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]

# The fine-tuning recipe (``finalize.tune.FinalizeConfig``), the same flags in every command that trains: their
# defaults are the fields of ``TUNING`` (``--epochs`` is each command's own), and ``tuning_config`` makes the recipe.
TUNING = FinalizeConfig()
LrOpt = Annotated[float, typer.Option("--lr", help="Peak SGD learning rate (cosine schedule).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Samples per batch.")]
KdOpt = Annotated[
    bool, typer.Option("--kd/--no-kd", help="Distil from the unpruned model, or plain cross-entropy, same schedule.")
]
KdTemperatureOpt = Annotated[float, typer.Option("--kd-temperature", help="KD temperature T.")]
KdAlphaOpt = Annotated[float, typer.Option("--kd-alpha", help="KD weight α (1−α on cross-entropy).")]
TuneSeedOpt = Annotated[int, typer.Option("--seed", help="Fine-tuning seed.")]


def tuning_config(
    epochs: int,
    lr: float,
    batch_size: int,
    kd: bool,
    kd_temperature: float,
    kd_alpha: float,
    seed: int = TUNING.seed,
    sparsity: float = TUNING.sparsity,
) -> FinalizeConfig:
    """The fine-tuning recipe the flags give (``FinalizeConfig``), checked: a one-line error for a bad value."""
    config = FinalizeConfig(
        epochs, lr, batch_size, kd=kd, temperature=kd_temperature, alpha=kd_alpha, seed=seed, sparsity=sparsity
    )
    config.validate()
    return config


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


def name_list(text: str | None) -> list[str] | None:
    """``"layer1.0.conv1, fc"`` → ``["layer1.0.conv1", "fc"]`` (``--ignore-layers``); None when not given."""
    if text is None:
        return None
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def int_list(text: str, flag: str, what: str = "integers", example: str = "0,1,2") -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; a one-line error naming ``flag`` (and ``what`` it takes) for anything else."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PruneSearchError(f"{flag} takes {what} separated by commas, e.g. {example}; got '{text}'") from None


def require_empty_folder(out: Path) -> None:
    """A one-line error unless ``--out`` is a new or empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PruneSearchError(f"{out} exists and is not an empty folder; choose another --out")


def root_text(data_root: Path | None) -> str | None:
    """``--data-root`` as the layers below take it (None: the dataset's own place)."""
    return str(data_root) if data_root else None


def data_spec(
    dataset: str, data_root: Path | None, val_fraction: float, split_seed: int, image_size: int | None
) -> DataSpec:
    return DataSpec(
        name=dataset,
        root=root_text(data_root),
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


def load_checkpoint(
    checkpoint: Path,
    model: str | None,
    model_options: dict[str, Any] | None,
    dataset: str | None,
    data_root: Path | None,
    download: bool = False,
) -> tuple[nn.Module, ModelSpec, DataSpec, DatasetBundle]:
    """The model a 'train' checkpoint holds (CPU), its spec, and its data, loaded: ``dataset``/``data_root`` override
    the stored ones; ``model`` is checked against the stored architecture (and a factory of that name trusted);
    ``model_options`` (None: the stored ones) likewise."""
    stored = read_checkpoint(checkpoint)
    data = DataSpec.from_dict(stored["data"])
    data = replace(data, name=dataset or data.name, root=root_text(data_root) or data.root)
    bundle = load_dataset(data, download=download)
    stored_spec = ModelSpec.from_dict(stored["model"])
    options = stored_spec.options if model_options is None else model_options
    spec = ModelSpec(model or stored_spec.name, bundle.in_channels, bundle.num_classes, bundle.image_size, options)
    net, _ = load_model(checkpoint, spec, trusted_factory=model)
    return net, spec, data, bundle


CheckpointDatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Dataset (default: the checkpoint's).")]
