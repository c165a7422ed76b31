"""``prune-search sparsify``: magnitude masks, fine-tuning with the masks held, sizes in three formats.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

import copy
import json
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from prune_search.cli.options import (
    TUNING,
    BatchSizeOpt,
    CheckpointDatasetOpt,
    DataRootOpt,
    DeviceOpt,
    ExpectedModelOpt,
    KdAlphaOpt,
    KdOpt,
    KdTemperatureOpt,
    LrOpt,
    ProgressOpt,
    TuneSeedOpt,
    load_checkpoint,
    print_epoch,
    require_empty_folder,
    tuning_config,
)
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.finalize.tune import train_network
from prune_search.sparse.checkpoint import save_sparse
from prune_search.training.checkpoint import model_payload, save_checkpoint
from prune_search.training.loop import evaluate
from prune_search.training.masks import check_sparsity, magnitude_masks, parse_sparsity_map
from prune_search.training.sparse_size import storage_report

MODEL_FILE = "model.pt"
MASKS_FILE = "masks.pt"
SPARSE_FILE = "sparse.pt"
REPORT_FILE = "report.json"
STATE_FILE = "state.pt"
SPARSIFY_EPOCHS = 3  # fine-tuning epochs with the masks held


def _kib(count: int) -> str:
    return f"{count / 1024:,.1f} KiB"


def sparsify_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Trained model checkpoint from 'train'.")],
    out: Annotated[
        Path, typer.Option("--out", help="Empty or new folder for the model, masks and report (created if missing).")
    ],
    sparsity: Annotated[
        float | None, typer.Option(help="Share of weights zeroed in every Conv/Linear but the classifier, in [0, 1).")
    ] = None,
    sparsity_map: Annotated[
        str | None, typer.Option(help="Per-layer sparsities overriding --sparsity, e.g. layer1.0.conv1=0.9,fc=0.5.")
    ] = None,
    include_classifier: Annotated[
        bool, typer.Option("--include-classifier", help="Sparsify the classifier at --sparsity too.")
    ] = False,
    model: ExpectedModelOpt = None,
    dataset: CheckpointDatasetOpt = None,
    data_root: DataRootOpt = None,
    epochs: Annotated[
        int, typer.Option(help="Fine-tuning epochs with the masks held (best epoch on val).")
    ] = SPARSIFY_EPOCHS,
    lr: LrOpt = TUNING.lr,
    batch_size: BatchSizeOpt = TUNING.batch_size,
    kd: KdOpt = TUNING.kd,
    kd_temperature: KdTemperatureOpt = TUNING.temperature,
    kd_alpha: KdAlphaOpt = TUNING.alpha,
    seed: TuneSeedOpt = TUNING.seed,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    if sparsity is None and not sparsity_map:
        raise PruneSearchError("give --sparsity S (e.g. 0.8) and/or --sparsity-map LAYER=S,...")
    uniform = check_sparsity(sparsity or 0.0)
    overrides = parse_sparsity_map(sparsity_map)
    config = tuning_config(epochs, lr, batch_size, kd, kd_temperature, kd_alpha, seed)
    require_empty_folder(out)
    base, spec, data, bundle = load_checkpoint(checkpoint, model, None, dataset, data_root)
    torch_device = resolve_device(device)
    base = base.to(torch_device).eval()
    student = copy.deepcopy(base)
    example = torch.zeros(2, bundle.in_channels, bundle.image_size, bundle.image_size, device=torch_device)
    masks = magnitude_masks(student, example, uniform, overrides, include_classifier=include_classifier)
    if not masks.masks:
        raise PruneSearchError("every asked sparsity is 0; nothing to sparsify")
    masks.apply(student)
    val_loader = bundle.loader("val", 512)
    pruned_val = evaluate(student, val_loader, torch_device).accuracy
    out.mkdir(parents=True, exist_ok=True)
    identity: dict[str, Any] = {"checkpoint": str(checkpoint), "sparsity": uniform, "overrides": overrides}
    identity |= {"include_classifier": include_classifier, "epochs": epochs, "lr": lr, "kd": kd, "seed": seed}
    fitted = train_network(
        student,
        bundle,
        config,
        out / STATE_FILE,
        teacher=base,
        identity=identity,
        resume=False,
        device=torch_device,
        progress=progress,
        on_epoch_end=print_epoch if progress else None,
        after_step=masks.hook(student),
    )
    (out / STATE_FILE).unlink(missing_ok=True)
    test = evaluate(student, bundle.loader("test", 512), torch_device).accuracy
    base_val = evaluate(base, val_loader, torch_device).accuracy
    base_test = evaluate(base, bundle.loader("test", 512), torch_device).accuracy
    student = student.cpu().eval()
    save_checkpoint(model_payload(spec, data, student.state_dict(), sparse=identity), out / MODEL_FILE)
    torch.save(masks.state_dict(), out / MASKS_FILE)
    sizes = storage_report(student, masks.masks)
    sizes["sparse_file_bytes"] = save_sparse(student, spec, masks.masks, out / SPARSE_FILE)
    sizes["dense_file_bytes"] = (out / MODEL_FILE).stat().st_size
    report = {
        **identity,
        "model": spec.to_dict(),
        "data": data.to_dict(),
        "best_epoch": fitted.best_epoch,
        "pruned_val_acc": pruned_val,
        "val_acc": fitted.val_acc,
        "test_acc": test,
        "base_val_acc": base_val,
        "base_test_acc": base_test,
        "wall_s": fitted.history[-1].wall_s,
        "size": sizes,
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    typer.echo(
        f"sparsity {100 * sizes['sparsity']:.1f} % of {sizes['sparsified_numel']:,} weights in "
        f"{sizes['sparsified_tensors']} tensors; nonzero params {sizes['nonzero_params']:,} of {sizes['params']:,}"
    )
    typer.echo(
        f"val acc {pruned_val:.4f} after pruning, {fitted.val_acc:.4f} after {epochs} epochs (base {base_val:.4f}); "
        f"test acc {test:.4f} (base {base_test:.4f})"
    )
    typer.echo(
        f"size: dense {_kib(sizes['dense_bytes'])}, CSR {_kib(sizes['csr_bytes'])}, bitmask "
        f"{_kib(sizes['bitmask_bytes'])}; files: {MODEL_FILE} {_kib(sizes['dense_file_bytes'])}, "
        f"{SPARSE_FILE} {_kib(sizes['sparse_file_bytes'])} → {out}"
    )
