"""Read-only study commands: ``status``, ``studies``.

They build nothing from a study (no model, no space), so this module imports no torch: on a large study the
answer comes in the time the database takes. Help texts: ``prune_search.cli.app.COMMANDS``.
"""

from typing import Any

import typer

from prune_search.cli.output import FormatOpt, Output, quiet_optuna
from prune_search.cli.storage_options import ExistingStudyOpt, StorageOpt
from prune_search.search.config import CONFIG_ATTR
from prune_search.search.status import spread, status
from prune_search.search.stored import open_storage, open_stored
from prune_search.storage import resolve_url
from prune_search.storage.optuna_tables import study_list


def status_command(study: ExistingStudyOpt, storage: StorageOpt = None, fmt: FormatOpt = "table") -> None:
    """Under ``--format csv``: the hypervolume history, one row per generation."""
    quiet_optuna()
    output = Output(fmt)
    info = status(open_stored(resolve_url(storage), study))
    output.results(info, lambda: _print_status(info), rows=info["history"])


def _print_status(info: dict[str, Any]) -> None:
    typer.echo(f"study {info['study']}: objectives {', '.join(info['objectives'])}")
    typer.echo("trials: " + ", ".join(f"{k} {v}" for k, v in sorted(info["trials"].items())))
    typer.echo(
        f"feasible front: {info['front']} trials; hypervolume {info['hypervolume']:.5f} "
        f"(objectives / base model, reference point {info['reference_point']})"
    )
    evaluations = info["evaluations"]
    if evaluations["budget"]:
        typer.echo(
            f"whole-candidate evaluations: {evaluations['measured']} measured, "
            f"{evaluations['claimed'] - evaluations['measured']} in progress, budget {evaluations['budget']}"
        )
    typer.echo("hypervolume history (generation, trials, hypervolume):")
    for item in spread(info["history"], 10):
        typer.echo(f"  {item['generation']:5d} {item['trials']:7d} {item['hypervolume']:.5f}")
    typer.echo(f"workers seen: {len(info['workers'])}")
    for worker in info["workers"]:
        typer.echo(
            f"  #{worker['worker_id']} {worker['host']} pid {worker['pid']}: {worker['trials']} trials, "
            f"last seen {worker['last_seen']} UTC"
        )


def studies(storage: StorageOpt = None, fmt: FormatOpt = "table") -> None:
    quiet_optuna()
    output = Output(fmt)
    engine, _ = open_storage(resolve_url(storage))
    rows = [
        {"study": name, "trials": trials, "kind": "prune-search" if ours else "optuna"}
        for name, trials, ours in study_list(engine, CONFIG_ATTR)
    ]

    def table() -> None:
        for row in rows:
            typer.echo(f"{row['study']}\t{row['trials']} trials\t{row['kind']}")

    output.results(rows, table)
