"""The ``prune-search elastic`` command.

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
from prune_search.cli.output import FormatOpt, Output, echo_table, quiet_optuna
from prune_search.cli.storage_options import ExistingStudyOpt, StorageOpt, StudyCheckpointOpt
from prune_search.device import resolve_device
from prune_search.elastic.nesting import NEST_RULES, check_levels, parse_trials, pick_trials
from prune_search.elastic.run import make_elastic
from prune_search.errors import PruneSearchError
from prune_search.search import open_study
from prune_search.storage import resolve_url


def _levels(front: int | None, trial_numbers: str | None) -> list[int] | None:
    """The trial numbers ``--trial-numbers`` names (None: ``--front K`` chooses), after the checks on the flags."""
    numbers = parse_trials(trial_numbers) if trial_numbers is not None else None
    check_levels(front, numbers)
    return numbers


def _print_table(rows: list[dict[str, Any]]) -> None:
    headers = ["level", "trial", "MACs (% base)", "params (% base)", "val acc", "test acc"]
    cells = [headers] + [
        [
            str(row["level"]),
            str(row["trial"]),
            f"{row['macs']:,} ({row['macs_pct']:.1f}%)",
            f"{row['params']:,} ({row['params_pct']:.1f}%)",
            f"{row['val_acc']:.4f}",
            f"{row['test_acc']:.4f}",
        ]
        for row in rows
    ]
    echo_table(cells)


def elastic_command(
    study: ExistingStudyOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for elastic.pt and levels.csv (created if missing).")],
    storage: StorageOpt = None,
    front: Annotated[
        int | None, typer.Option(help="Use K front trials spread across MACs as the levels (as finalize --front K).")
    ] = None,
    trial_numbers: Annotated[str | None, typer.Option(help="Use these trials as the levels, e.g. 12,40,77.")] = None,
    nest: Annotated[
        str, typer.Option(help="max: a level keeps the most of the trials up to it; min: the least from it up.")
    ] = "max",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs per level (0: the pruned base weights).")] = 0,
    bn_batches: Annotated[
        int, typer.Option(help="Re-estimate each level's own BatchNorm statistics on this many train batches.")
    ] = 0,
    lr: LrOpt = TUNING.lr,
    batch_size: BatchSizeOpt = TUNING.batch_size,
    kd_temperature: KdTemperatureOpt = TUNING.temperature,
    kd_alpha: KdAlphaOpt = TUNING.alpha,
    kd: KdOpt = TUNING.kd,
    seed: TuneSeedOpt = TUNING.seed,
    checkpoint: StudyCheckpointOpt = None,
    model: ExpectedModelOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
    fmt: FormatOpt = "table",
) -> None:
    quiet_optuna()
    output = Output(fmt)
    if nest not in NEST_RULES:
        raise PruneSearchError(f"--nest must be one of {', '.join(NEST_RULES)}, got '{nest}'")
    if epochs < 0:
        raise PruneSearchError(f"--epochs must be 0 or more, got {epochs}")
    tuning = tuning_config(epochs, lr, batch_size, kd, kd_temperature, kd_alpha, seed) if epochs > 0 else None
    numbers = _levels(front, trial_numbers)
    handle = open_study(resolve_url(storage), study, model=model)
    chosen = pick_trials(handle, front, numbers)

    def notes(lines: list[str]) -> None:
        for line in lines:
            typer.echo(f"warning: {line}", err=True)

    def level_start(level: int) -> None:
        typer.echo(f"fine-tuning level {level}", err=True)

    _, rows = make_elastic(
        handle,
        chosen,
        out,
        rule=nest,
        tuning=tuning,
        bn_batches=bn_batches,
        checkpoint=checkpoint,
        data_root=root_text(data_root),
        device=resolve_device(device),
        progress=progress,
        on_notes=notes,
        on_level_start=level_start,
        on_epoch_end=print_epoch,
    )
    output.results(rows, lambda: _print_table(rows))
    output.note(f"{len(rows)} nested levels in {out / 'elastic.pt'} (table: {out / 'levels.csv'})")
    output.note("load: prune_search.elastic.load_elastic(path).set_width(level)")
