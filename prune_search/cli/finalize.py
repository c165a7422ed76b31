"""``prune-search finalize``: prune a front trial for real, fine-tune, export, record.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from prune_search.cli.options import (
    BatchSizeOpt,
    DataRootOpt,
    DeviceOpt,
    ExpectedModelOpt,
    KdAlphaOpt,
    KdOpt,
    KdTemperatureOpt,
    LrOpt,
    ProgressOpt,
    StorageOpt,
    StudyOpt,
    TuneSeedOpt,
    print_epoch,
    quiet_optuna,
)
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.finalize import FinalizeConfig, choose, finalize_trial
from prune_search.finalize.rerank import RERANKED, kl_rerank
from prune_search.finalize.rerank import bn_rerank as bn_rerank_rows
from prune_search.search import open_study
from prune_search.search.fidelity import multi_fidelity
from prune_search.search.study import base_checkpoint, load_study_base
from prune_search.storage import resolve_url
from prune_search.storage.trial_records import claim


def finalize(
    study: StudyOpt,
    out: Annotated[Path, typer.Option("--out", help="Output folder (with --front K: one sub-folder per trial).")],
    storage: StorageOpt = None,
    trial: Annotated[int | None, typer.Option(help="Trial number to finalize.")] = None,
    knee: Annotated[bool, typer.Option("--knee", help="The front trial closest to the utopia point.")] = False,
    max_macs: Annotated[str | None, typer.Option(help="Pick among the front trials within this MACs budget.")] = None,
    max_params: Annotated[str | None, typer.Option(help="... and within this params budget.")] = None,
    bn_rerank: Annotated[
        bool | None,
        typer.Option(
            "--bn-rerank/--no-bn-rerank",
            help="With a budget: the best of its 16 largest front trials by val accuracy after BN recalibration, "
            "or the best score (default: on; in a study with --evaluations the least whole-candidate KL of the 16 "
            "largest candidates of the corrected front).",
        ),
    ] = None,
    front: Annotated[int | None, typer.Option(help="Finalize K front trials spread across MACs.")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 15,
    lr: LrOpt = 0.01,
    batch_size: BatchSizeOpt = 128,
    kd_temperature: KdTemperatureOpt = 4.0,
    kd_alpha: KdAlphaOpt = 0.9,
    kd: KdOpt = True,
    seed: TuneSeedOpt = 0,
    sparsity: Annotated[
        float, typer.Option(help="Also zero this share of each Conv/Linear weight (magnitude masks, held).")
    ] = 0.0,
    onnx: Annotated[bool, typer.Option("--onnx", help="Also export model.onnx.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Finalize a trial that is not on the front.")] = False,
    model: ExpectedModelOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out (also automatic).")] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="Path of the study's base checkpoint here.")] = None,
    data_root: DataRootOpt = None,
    artifact_dir: Annotated[Path, typer.Option(help="Optuna artifact store folder.")] = Path("prune-search-artifacts"),
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    quiet_optuna()
    config = FinalizeConfig(
        epochs, lr, batch_size, kd=kd, temperature=kd_temperature, alpha=kd_alpha, seed=seed, sparsity=sparsity
    )
    config.validate()
    url = resolve_url(storage)
    handle = open_study(url, study, model=model)
    torch_device = resolve_device(device)

    def rerank(fitting: list[dict[str, Any]]) -> dict[str, Any]:
        model, bundle = load_study_base(
            handle, base_checkpoint(handle, checkpoint), str(data_root) if data_root else None
        )
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
    if resume and not (out / "run.json").is_file() and front is None:
        raise PruneSearchError(f"nothing to resume in {out}; drop --resume to start")
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
            data_root=str(data_root) if data_root else None,
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
