"""``prune-search finalize``: prune a front trial for real, fine-tune, export, record.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from prune_search.cli.options import (
    TUNING,
    BatchSizeOpt,
    DataRootOpt,
    DeviceOpt,
    ExpectedModelOpt,
    KdAlphaOpt,
    KdOpt,
    KdTemperatureOpt,
    LrOpt,
    ProgressOpt,
    TuneSeedOpt,
    print_epoch,
    root_text,
    tuning_config,
)
from prune_search.cli.output import quiet_optuna
from prune_search.cli.storage_options import (
    ARTIFACT_DIR,
    ArtifactDirOpt,
    ExistingStudyOpt,
    StorageOpt,
    StudyCheckpointOpt,
)
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.finalize import choose, finalize_trial
from prune_search.finalize.rerank import (
    AUTO_PICK,
    CALIBRATION_BATCHES,
    INCUMBENT,
    RERANKED,
    SWITCH_MARGIN,
    TRAINED_RUNGS,
    VAL_BATCHES,
    kl_rerank,
    pick_method,
    reference_rows,
    standings_text,
    trained_rerank,
)
from prune_search.finalize.rerank import bn_rerank as bn_rerank_rows
from prune_search.search import open_study
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
    pick: Annotated[
        str,
        typer.Option(
            "--pick",
            help=f"With a budget, how to pick: 'trained' (successive halving of short KD fine-tunes of "
            f"{' then '.join(map(str, TRAINED_RUNGS))} steps over the {RERANKED} largest front trials within it and "
            f"uniform/global pruning at it), 'bn' (the best of the {RERANKED} by val accuracy after BN recalibration "
            f"on {CALIBRATION_BATCHES} train batches, scored on {VAL_BATCHES} val batches), 'kl' (the least "
            "whole-candidate KL of the 16), 'best' (the best score), or 'auto' (the default: "
            f"'{AUTO_PICK}'; 'kl' in a study with --evaluations).",
        ),
    ] = "auto",
    margin: Annotated[
        float,
        typer.Option(
            "--margin",
            help=f"With --pick trained: the halving winner replaces {INCUMBENT} pruning only if its KL is at least "
            "this share below uniform's after the same KD steps (0: always the winner).",
        ),
    ] = SWITCH_MARGIN,
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

    chosen = pick_method(pick, handle)
    if not 0 <= margin < 1:
        raise PruneSearchError(f"--margin must be in [0, 1) (a share of uniform's KL), got {margin}")

    def rerank(fitting: list[dict[str, Any]]) -> dict[str, Any]:
        base = open_base(handle, checkpoint, root_text(data_root))
        model, bundle = base.model.to(torch_device), base.bundle
        shown = min(len(fitting), RERANKED)
        if chosen == "trained":
            references = reference_rows(handle, max_macs, max_params, model, bundle, torch_device)
            pick = trained_rerank(
                handle,
                fitting,
                model,
                bundle,
                torch_device,
                references,
                on_rung=lambda rung, count, steps: typer.echo(f"rung {rung + 1}: {count} candidates, {steps} KD steps"),
                margin=margin,
            )
            row = pick.row
            typer.echo(standings_text(pick))
            how = (
                f"{INCUMBENT} pruning, kept: no candidate's KL was {margin:.0%} below its {pick.kl:.4f} nats"
                if pick.check is not None and pick.check["kept"]
                else f"the least KL ({pick.kl:.4f} nats)"
            )
            typer.echo(
                f"trial {row['trial']}: {how} after short KD fine-tunes of the {shown} front trials with the most "
                f"MACs within the budget and the references {', '.join(references) or 'none'}"
            )
        elif chosen == "kl":
            row, kl = kl_rerank(handle, fitting, model, bundle, torch_device)
            typer.echo(
                f"trial {row['trial']}: the least whole-candidate KL ({kl:.4f} nats) of the {shown} front candidates "
                "with the most MACs within the budget"
            )
        else:
            row, accuracy = bn_rerank_rows(handle, fitting, model, bundle, torch_device)
            typer.echo(
                f"trial {row['trial']}: the best by val accuracy after BN recalibration ({100 * accuracy:.2f}%) of the "
                f"{shown} front trials with the most MACs within the budget"
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
        rerank=None if chosen == "best" else rerank,
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
