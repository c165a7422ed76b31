"""``prune-search finalize``: prune a front trial for real, fine-tune, export, record.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from prune_search.cli.options import (
    ARTIFACT_DIR,
    TUNING,
    ArtifactDirOpt,
    BatchSizeOpt,
    DataRootOpt,
    DeviceOpt,
    ExistingStudyOpt,
    ExpectedModelOpt,
    KdAlphaOpt,
    KdOpt,
    KdTemperatureOpt,
    LrOpt,
    ProgressOpt,
    StorageOpt,
    StudyCheckpointOpt,
    TuneSeedOpt,
    print_epoch,
    quiet_optuna,
    root_text,
    tuning_config,
)
from prune_search.device import resolve_device
from prune_search.finalize import choose, finalize_trial
from prune_search.finalize.rerank import CALIBRATION_BATCHES, RERANKED, VAL_BATCHES, kl_rerank
from prune_search.finalize.rerank import bn_rerank as bn_rerank_rows
from prune_search.search import open_study
from prune_search.search.fidelity import multi_fidelity
from prune_search.search.study import open_base
from prune_search.storage import resolve_url
from prune_search.storage.trial_records import claim


def finalize(
    study: ExistingStudyOpt,
    out: Annotated[
        Path,
        typer.Option("--out", help="Output folder, created if missing (with --front K: one sub-folder per trial)."),
    ],
    storage: StorageOpt = None,
    trial: Annotated[int | None, typer.Option(help="Trial number to finalize.")] = None,
    knee: Annotated[bool, typer.Option("--knee", help="The front trial closest to the utopia point.")] = False,
    max_macs: Annotated[str | None, typer.Option(help="Pick among the front trials within this MACs budget.")] = None,
    max_params: Annotated[str | None, typer.Option(help="... and within this params budget.")] = None,
    bn_rerank: Annotated[
        bool | None,
        typer.Option(
            "--bn-rerank/--no-bn-rerank",
            help=f"With a budget: the best of its {RERANKED} largest front trials by val accuracy after BN "
            f"recalibration on {CALIBRATION_BATCHES} train batches (scored on {VAL_BATCHES} val batches), or the best "
            f"score (default: on; in a study with --evaluations the least whole-candidate KL of the {RERANKED} "
            "largest candidates of the corrected front).",
        ),
    ] = None,
    front: Annotated[int | None, typer.Option(help="Finalize K front trials spread across MACs.")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = TUNING.epochs,
    lr: LrOpt = TUNING.lr,
    batch_size: BatchSizeOpt = TUNING.batch_size,
    kd_temperature: KdTemperatureOpt = TUNING.temperature,
    kd_alpha: KdAlphaOpt = TUNING.alpha,
    kd: KdOpt = TUNING.kd,
    seed: TuneSeedOpt = TUNING.seed,
    sparsity: Annotated[
        float, typer.Option(help="Also zero this share of each Conv/Linear weight (magnitude masks, held).")
    ] = TUNING.sparsity,
    onnx: Annotated[bool, typer.Option("--onnx", help="Also export model.onnx.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Finalize a trial that is not on the front.")] = False,
    model: ExpectedModelOpt = None,
    checkpoint: StudyCheckpointOpt = None,
    data_root: DataRootOpt = None,
    artifact_dir: ArtifactDirOpt = ARTIFACT_DIR,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    quiet_optuna()
    config = tuning_config(epochs, lr, batch_size, kd, kd_temperature, kd_alpha, seed, sparsity)
    url = resolve_url(storage)
    handle = open_study(url, study, model=model)
    torch_device = resolve_device(device)

    def rerank(fitting: list[dict[str, Any]]) -> dict[str, Any]:
        base = open_base(handle, checkpoint, root_text(data_root))
        model, bundle = base.model, base.bundle
        shown = min(len(fitting), RERANKED)
        if multi_fidelity(handle) and bn_rerank is None:
            row, kl = kl_rerank(handle, fitting, model.to(torch_device), bundle, torch_device)
            typer.echo(
                f"trial {row['trial']}: the least whole-candidate KL ({kl:.4f} nats) of the {shown} candidates of the "
                "corrected front with the most MACs within the budget (--no-bn-rerank: the best measured)"
            )
            return row
        row, accuracy = bn_rerank_rows(handle, fitting, model.to(torch_device), bundle, torch_device)
        typer.echo(
            f"trial {row['trial']}: the best by val accuracy after BN recalibration ({100 * accuracy:.2f}%) of the "
            f"{shown} front trials with the most MACs within the budget (--no-bn-rerank: the best score)"
        )
        return row

    numbers, notes = choose(
        handle,
        trial=trial,
        use_knee=knee,
        max_macs=max_macs,
        max_params=max_params,
        front=front,
        force=force,
        rerank=None if bn_rerank is False else rerank,
    )
    for note in notes:
        typer.echo(f"warning: {note}", err=True)
    for number in numbers:
        target = out / f"trial-{number}" if front is not None else out
        if front is not None and not claim(handle.engine, handle.study_id, number, str(target.resolve())):
            typer.echo(f"trial {number}: taken by another finalize worker, skipped")
            continue
        result, _ = finalize_trial(
            handle,
            number,
            config,
            target,
            checkpoint=checkpoint,
            data_root=root_text(data_root),
            onnx=onnx,
            artifact_dir=artifact_dir,
            device=torch_device,
            progress=progress,
            on_epoch_end=print_epoch,
        )
        typer.echo(
            f"trial {number}: val acc {result['val_acc']:.4f} (base {result['base_val_acc']:.4f}), "
            f"test acc {result['test_acc']:.4f} (base {result['base_test_acc']:.4f}), "
            f"MACs −{result['macs_reduction_pct']:.1f}%, params −{result['params_reduction_pct']:.1f}% → {target}"
        )
