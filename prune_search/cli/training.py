"""Baseline checkpoints: ``train`` and ``evaluate``.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from pathlib import Path
from typing import Annotated

import typer

from prune_search.cli.options import (
    BatchSizeOpt,
    CheckpointDatasetOpt,
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    DownloadOpt,
    ExpectedModelOpt,
    ImageSizeOpt,
    LrOpt,
    ModelOpt,
    ModelOptions,
    ProgressOpt,
    SplitSeedOpt,
    ValFractionOpt,
    data_spec,
    load_checkpoint,
    parse_model_options,
    print_epoch,
)
from prune_search.cli.output import FormatOpt, Output, require_parent_folder
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.training import TrainConfig, train_baseline
from prune_search.training.loop import evaluate

TRAINING = TrainConfig()  # the defaults of 'train'


def train(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (best epoch on val); its folder must exist.")],
    model: ModelOpt = TRAINING.model,
    model_option: ModelOptions = None,
    dataset: DatasetOpt = TRAINING.data.name,
    data_root: DataRootOpt = None,
    val_fraction: ValFractionOpt = TRAINING.data.val_fraction,
    split_seed: SplitSeedOpt = TRAINING.data.split_seed,
    image_size: ImageSizeOpt = None,
    download: DownloadOpt = False,
    epochs: Annotated[int, typer.Option(help="Epochs; the cosine schedule spans exactly these.")] = TRAINING.epochs,
    batch_size: BatchSizeOpt = TRAINING.batch_size,
    lr: LrOpt = TRAINING.lr,
    momentum: Annotated[float, typer.Option(help="SGD (Nesterov) momentum.")] = TRAINING.momentum,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = TRAINING.weight_decay,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling and augmentation.")] = TRAINING.seed,
    device: DeviceOpt = "auto",
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run writing --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out and its state.")] = False,
    progress: ProgressOpt = True,
) -> None:
    require_parent_folder(out)
    config = TrainConfig(
        model=model,
        model_options=parse_model_options(model_option),
        data=data_spec(dataset, data_root, val_fraction, split_seed, image_size),
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
        on_epoch_end=print_epoch,
    )
    typer.echo(
        f"{result.model_spec.describe()} on {dataset}: best epoch {result.best_epoch}/{epochs}, "
        f"val acc {result.val_acc:.4f}, test acc {result.test_acc:.4f}, {result.wall_s:.1f}s → {out}"
    )


def evaluate_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A model checkpoint from 'train'.")],
    model: ExpectedModelOpt = None,
    model_option: ModelOptions = None,
    dataset: CheckpointDatasetOpt = None,
    data_root: DataRootOpt = None,
    split: Annotated[str, typer.Option(help="val or test.")] = "val",
    download: DownloadOpt = False,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "table",
) -> None:
    output = Output(fmt)
    if split not in ("val", "test"):
        raise PruneSearchError(f"--split must be val or test, got '{split}'")
    options = parse_model_options(model_option) if model else None
    net, _, data, bundle = load_checkpoint(checkpoint, model, options, dataset, data_root, download=download)
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
    line = (
        f"{checkpoint} on {data.name} {split}: accuracy {metrics.accuracy:.4f}, "
        f"loss {metrics.loss:.4f} ({metrics.samples} samples)"
    )
    output.results(result, lambda: typer.echo(line), rows=[result])
