"""The ``prune-search`` command line."""

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from prune_search.data import DataSpec, available_datasets, load_dataset
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec, available_models
from prune_search.training import EpochRecord, TrainConfig, load_model, read_checkpoint, train_baseline
from prune_search.training.loop import evaluate

app = typer.Typer(
    help="Multi-objective search for structured pruning of neural networks, on Optuna.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[str, typer.Option("--model", help="Zoo name, tv:NAME or package.module:factory.")]
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


def _data_spec(
    dataset: str, data_root: Path | None, val_fraction: float, split_seed: int, image_size: int | None
) -> DataSpec:
    return DataSpec(
        name=dataset,
        root=str(data_root) if data_root else None,
        val_fraction=val_fraction,
        split_seed=split_seed,
        image_size=image_size,
    )


def _print_epoch(record: EpochRecord) -> None:
    tqdm.write(
        f"epoch {record.epoch:3d}  train loss {record.train_loss:.4f} acc {record.train_acc:.4f}  "
        f"val loss {record.val_loss:.4f} acc {record.val_acc:.4f}  lr {record.lr:.4g}  {record.wall_s:.1f}s",
        file=sys.stderr,
    )


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (best epoch on val).")],
    model: ModelOpt = "resnet20",
    model_option: ModelOptions = None,
    dataset: DatasetOpt = "digits",
    data_root: DataRootOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    split_seed: SplitSeedOpt = 0,
    image_size: ImageSizeOpt = None,
    download: DownloadOpt = False,
    epochs: Annotated[int, typer.Option(help="Epochs; the cosine schedule spans exactly these.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Samples per batch.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak SGD learning rate.")] = 0.1,
    momentum: Annotated[float, typer.Option(help="SGD (Nesterov) momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 5e-4,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling and augmentation.")] = 0,
    device: DeviceOpt = "auto",
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run writing --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out and its state.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a baseline model: SGD + cosine, best epoch on val, test reported once."""
    config = TrainConfig(
        model=model,
        model_options=parse_model_options(model_option),
        data=_data_spec(dataset, data_root, val_fraction, split_seed, image_size),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
    )
    result = train_baseline(
        config,
        out,
        resume=resume,
        overwrite=overwrite,
        device=device,
        download=download,
        progress=progress,
        on_epoch_end=_print_epoch,
    )
    typer.echo(
        f"{result.model_spec.describe()} on {dataset}: best epoch {result.best_epoch}/{epochs}, "
        f"val acc {result.val_acc:.4f}, test acc {result.test_acc:.4f}, {result.wall_s:.1f}s → {out}"
    )


@app.command("evaluate")
def evaluate_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A model checkpoint from 'train'.")],
    model: Annotated[str | None, typer.Option("--model", help="Expected architecture (checked).")] = None,
    model_option: ModelOptions = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset (default: the checkpoint's).")] = None,
    data_root: DataRootOpt = None,
    split: Annotated[str, typer.Option(help="val or test.")] = "val",
    download: DownloadOpt = False,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Accuracy and loss of a checkpoint on the val (or test) split."""
    if split not in ("val", "test"):
        raise PruneSearchError(f"--split must be val or test, got '{split}'")
    stored = read_checkpoint(checkpoint)
    data = DataSpec.from_dict(stored["data"])
    data = replace(data, name=dataset or data.name, root=str(data_root) if data_root else data.root)
    bundle = load_dataset(data, download=download)
    stored_spec = ModelSpec.from_dict(stored["model"])
    name, options = (model, parse_model_options(model_option)) if model else (stored_spec.name, stored_spec.options)
    wanted = ModelSpec(name, bundle.in_channels, bundle.num_classes, bundle.image_size, options)
    net, _ = load_model(checkpoint, wanted)
    torch_device = resolve_device(device)
    metrics = evaluate(net.to(torch_device), bundle.loader(split, 512), torch_device)
    result = {
        "checkpoint": str(checkpoint),
        "dataset": data.name,
        "split": split,
        "accuracy": metrics.accuracy,
        "loss": metrics.loss,
        "samples": metrics.samples,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"{checkpoint} on {data.name} {split}: accuracy {metrics.accuracy:.4f}, "
            f"loss {metrics.loss:.4f} ({metrics.samples} samples)"
        )


@app.command("models")
def models_command() -> None:
    """List the model zoo."""
    for name in available_models():
        typer.echo(name)
    typer.echo("tv:<name>  (any torchvision classification model, random init)")
    typer.echo("package.module:factory  (your own model)")


@app.command("datasets")
def datasets_command() -> None:
    """List the datasets."""
    for name in available_datasets():
        typer.echo(name)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except PruneSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
