"""The ``prune-search elastic`` command.

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
    TuneSeedOpt,
    print_epoch,
    quiet_optuna,
)
from prune_search.device import resolve_device
from prune_search.elastic.nesting import NEST_RULES, parse_trials, pick_trials
from prune_search.elastic.run import make_elastic
from prune_search.errors import PruneSearchError
from prune_search.finalize import FinalizeConfig
from prune_search.search import open_study
from prune_search.storage import resolve_url


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
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    for line in cells:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def elastic_command(
    study: Annotated[str, typer.Option("--study", help="Study whose trials become the levels.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for elastic.pt and levels.csv.")],
    storage: StorageOpt = None,
    widths: Annotated[int | None, typer.Option(help="Use K front trials spread across MACs as the levels.")] = None,
    trials: Annotated[str | None, typer.Option(help="Use these trials as the levels, e.g. 12,40,77.")] = None,
    nest: Annotated[
        str, typer.Option(help="max: a level keeps the most of the trials up to it; min: the least from it up.")
    ] = "max",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs per level (0: the pruned base weights).")] = 0,
    bn_batches: Annotated[
        int, typer.Option(help="Re-estimate each level's own BatchNorm statistics on this many train batches.")
    ] = 0,
    lr: LrOpt = 0.01,
    batch_size: BatchSizeOpt = 128,
    kd_temperature: KdTemperatureOpt = 4.0,
    kd_alpha: KdAlphaOpt = 0.9,
    kd: KdOpt = True,
    seed: TuneSeedOpt = 0,
    checkpoint: Annotated[Path | None, typer.Option(help="Path of the study's base checkpoint here.")] = None,
    model: ExpectedModelOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    quiet_optuna()
    if nest not in NEST_RULES:
        raise PruneSearchError(f"--nest must be one of {', '.join(NEST_RULES)}, got '{nest}'")
    if epochs < 0:
        raise PruneSearchError(f"--epochs must be 0 or more, got {epochs}")
    tuning = None
    if epochs > 0:
        tuning = FinalizeConfig(epochs, lr, batch_size, kd=kd, temperature=kd_temperature, alpha=kd_alpha, seed=seed)
        tuning.validate()
    numbers = parse_trials(trials) if trials is not None else None
    if (widths is None) == (numbers is None):
        raise PruneSearchError("choose the levels one way: --widths K or --trials a,b,c")
    handle = open_study(resolve_url(storage), study, model=model)
    chosen = pick_trials(handle, widths, numbers)

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
        data_root=str(data_root) if data_root else None,
        device=resolve_device(device),
        progress=progress,
        on_notes=notes,
        on_level_start=level_start,
        on_epoch_end=print_epoch,
    )
    _print_table(rows)
    typer.echo(f"{len(rows)} nested levels in {out / 'elastic.pt'} (table: {out / 'levels.csv'})")
    typer.echo("load: prune_search.elastic.load_elastic(path).set_width(level)")
