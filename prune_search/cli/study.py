"""Study commands: ``start`` (``front``: :mod:`prune_search.cli.front`; ``status`` and ``studies``:
:mod:`prune_search.cli.status`).

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from prune_search.cli.front import print_front
from prune_search.cli.interrupt import deferred_interrupt
from prune_search.cli.options import (
    DataRootOpt,
    DeviceOpt,
    IgnoreLayersOpt,
    ModelOptions,
    ProgressOpt,
    name_list,
    parse_model_options,
    root_text,
)
from prune_search.cli.output import quiet_optuna
from prune_search.cli.storage_options import CreateOrJoinStudyOpt, StorageOpt
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.evaluators import CRITERIA, PROXIES
from prune_search.search import GenerationReport, StartOptions, run_worker
from prune_search.search.config import DEFAULTS, OBJECTIVES
from prune_search.search.front import front_indices
from prune_search.search.status import spread
from prune_search.search.study_note import update_study_note
from prune_search.search.summary import front_rows, load_archive
from prune_search.sensitivity.result import SENSITIVITY_USES
from prune_search.sensitivity.study import create_or_join_with_scan
from prune_search.storage import redact, resolve_url
from prune_search.storage.bulk import complete_trials

NOTE_EVERY = 10  # generations between refreshes of the study's dashboard note


def start(
    study: CreateOrJoinStudyOpt,
    storage: StorageOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"Base model (new study; default {DEFAULTS['model']}); joining a package.module:factory study, "
            "name it."
        ),
    ] = None,
    model_option: ModelOptions = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Trained base checkpoint (default: cached baseline).")] = None,
    dataset: Annotated[str | None, typer.Option(help=f"Dataset (new study; default {DEFAULTS['dataset']}).")] = None,
    data_root: DataRootOpt = None,
    trials: Annotated[int, typer.Option(help="Run until the study holds this many COMPLETE trials.")] = 2000,
    population: Annotated[
        int | None, typer.Option(help=f"NSGA-II population size (default {DEFAULTS['population']}).")
    ] = None,
    objectives: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated, of {', '.join(OBJECTIVES)} (default {','.join(DEFAULTS['objectives'])})."),
    ] = None,
    max_macs: Annotated[str | None, typer.Option(help="MACs budget: absolute (2.5M) or % of the base (50%).")] = None,
    max_params: Annotated[str | None, typer.Option(help="Params budget: absolute (100k) or % of the base.")] = None,
    criterion: Annotated[
        str | None,
        typer.Option(help=f"Importance criterion, of {', '.join(CRITERIA)} (default {DEFAULTS['criterion']})."),
    ] = None,
    proxy: Annotated[
        str | None,
        typer.Option(
            help=f"Proxy objective, of {', '.join(PROXIES)} (default {DEFAULTS['proxy']}): bn_kl and bn_loss "
            "measured one group at a time; taylor_loss and retained_fraction from importance alone."
        ),
    ] = None,
    evaluations: Annotated[
        int | None,
        typer.Option(
            help="Whole-candidate evaluations (BN-recalibrated KL on the train sample) the study may spend on "
            f"promoted front candidates; they correct the proxy and rank the front (default "
            f"{DEFAULTS['evaluations']}; 0: proxy only; see the README for when it helps)."
        ),
    ] = None,
    calibration_batches: Annotated[
        int | None,
        typer.Option(help=f"Train batches for importance (default {DEFAULTS['calibration_batches']})."),
    ] = None,
    min_ratio: Annotated[
        float | None, typer.Option(help=f"Smallest keep ratio (default {DEFAULTS['min_ratio']}).")
    ] = None,
    ratio_step: Annotated[
        float | None, typer.Option(help=f"Keep-ratio grid step (default {DEFAULTS['ratio_step']}).")
    ] = None,
    round_to: Annotated[
        int | None, typer.Option(help=f"Round keep counts to multiples of this (default {DEFAULTS['round_to']}).")
    ] = None,
    min_keep: Annotated[
        int | None, typer.Option(help=f"Fewest channels a group keeps (default {DEFAULTS['min_keep']}).")
    ] = None,
    ignore_layers: IgnoreLayersOpt = None,
    sensitivity: Annotated[
        Path | None, typer.Option(help="A 'sensitivity' output folder or its sensitivity.json (new study).")
    ] = None,
    sensitivity_use: Annotated[
        str | None,
        typer.Option(
            help=f"seed: allocation in generation 0; bound: it floors each group (default {SENSITIVITY_USES[0]})."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="This worker's seed (mixed with its ordinal in the study).")] = 0,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    quiet_optuna()
    if trials < 1:
        raise PruneSearchError(f"--trials must be at least 1, got {trials}")
    url = resolve_url(storage)
    options = StartOptions(
        model=model,
        model_options=parse_model_options(model_option) if model_option else None,
        checkpoint=checkpoint,
        dataset=dataset,
        data_root=root_text(data_root),
        population=population,
        objectives=[o.strip() for o in objectives.split(",")] if objectives else None,
        max_macs=max_macs,
        max_params=max_params,
        criterion=criterion,
        proxy=proxy,
        evaluations=evaluations,
        calibration_batches=calibration_batches,
        min_ratio=min_ratio,
        ratio_step=ratio_step,
        round_to=round_to,
        min_keep=min_keep,
        ignored_layers=name_list(ignore_layers),
    )
    handle, created = create_or_join_with_scan(
        url, study, options, sensitivity, sensitivity_use, device=device, progress=progress
    )
    verb = "created" if created else "joined"
    typer.echo(f"{verb} study '{study}' in {redact(url)}: {len(handle.space)} groups, {handle.config['model']['name']}")
    bar = tqdm(total=trials, desc="trials", disable=not progress, dynamic_ncols=True)

    measured = [0]
    latest: list[GenerationReport] = []

    def report(update: GenerationReport) -> None:
        interrupt.check()  # the generation is stored: stopping here leaves every stored generation whole
        latest[:] = [update]
        bar.n = update.complete
        measured[0] += update.measured
        extra = {"measured": measured[0]} if handle.config.get("evaluations") else {}
        bar.set_postfix(front=update.front, hv=f"{update.hypervolume:.4f}", gen=update.generation, **extra)
        if update.generation % NOTE_EVERY == 0:
            update_study_note(handle, update.archive, update.front_rows)

    try:
        with deferred_interrupt() as interrupt:
            added = run_worker(
                handle,
                trials,
                seed=seed,
                device=resolve_device(device),
                on_generation=report,
                checkpoint=checkpoint,
                data_root=root_text(data_root),
            )
    except KeyboardInterrupt:
        bar.close()
        held = complete_trials(handle.engine, handle.study_id)
        typer.echo(
            f"interrupted: study '{study}' holds {held} complete trials (every stored generation is whole); "
            "rerun the same command to resume",
            err=True,
        )
        raise typer.Exit(130) from None
    bar.close()
    # the worker's archive, brought up to date, rather than the whole study read twice more (≈ 2 s at 100k trials)
    archive = latest[0].archive if latest else load_archive(handle)
    archive.refresh()
    front = front_indices(archive.F, archive.violation)
    update_study_note(handle, archive, front)
    rows = front_rows(handle, archive, proxy_front=front)
    typer.echo(f"this worker added {added} trials; the study's feasible front holds {len(rows)} trials:")
    print_front(spread(rows, 15), handle.config["proxy"])
    typer.echo(f"all of it: prune-search front --study {study} --storage '{redact(url)}'")
    typer.echo(
        f"in the browser: prune-search dashboard --study {study} --storage '{redact(url)}' "
        f"(or optuna-dashboard '{redact(url)}' --artifact-dir prune-search-artifacts)"
    )
