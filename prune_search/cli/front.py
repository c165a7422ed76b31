"""``front``: the study's feasible Pareto trials, read from what each trial stored.

Trials of this version store their keep counts, costs and proxies, so the rows are read, not recomputed: this
module imports no torch (an older study's rows are recomputed, which builds its space). ``start`` prints its
summary with :func:`print_front` too. Help texts: ``prune_search.cli.app.COMMANDS``.
"""

from typing import Annotated, Any

import typer

from prune_search.cli.output import FormatOpt, Output, echo_table, quiet_optuna
from prune_search.cli.storage_options import ExistingStudyOpt, StorageOpt
from prune_search.errors import PruneSearchError
from prune_search.search.status import spread
from prune_search.search.stored import open_stored
from prune_search.search.stored_front import stored_front_rows
from prune_search.storage import resolve_url


def _row_cells(row: dict[str, Any], proxy: str, measured: bool) -> list[str]:
    keep = " ".join(str(v) for v in row["keep"].values())
    strategy = "".join("m" if v == "min" else "d" for v in row["strategy"].values())
    scores = [f"{row['measured']['kl']:.4g}", f"{100 * row['measured']['accuracy']:.1f}"] if measured else []
    return [
        str(row["trial"]),
        f"{row['macs']:,} ({row['macs_pct']:.1f}%)",
        f"{row['params']:,} ({row['params_pct']:.1f}%)",
        f"{row[f'proxy_{proxy}']:.4g}",
        *scores,
        keep,
        strategy,
    ]


def print_front(rows: list[dict[str, Any]], proxy: str) -> None:
    """The rows as a table; a measured front (multi-fidelity study) adds the whole-candidate KL and accuracy."""
    measured = bool(rows) and all("measured" in row for row in rows)
    scores = ["measured KL", "train acc % (BN re-estimated)"] if measured else []
    headers = [
        "trial",
        "MACs (% base)",
        "params (% base)",
        proxy,
        *scores,
        "keep per group",
        "strategy (m=min d=median)",
    ]
    echo_table([headers] + [_row_cells(row, proxy, measured) for row in rows])


def front(
    study: ExistingStudyOpt,
    storage: StorageOpt = None,
    limit: Annotated[
        int | None, typer.Option(help="Show this many front trials, spread evenly over MACs (default: all).")
    ] = None,
    fmt: FormatOpt = "table",
) -> None:
    quiet_optuna()
    output = Output(fmt)
    if limit is not None and limit < 1:
        raise PruneSearchError(f"--limit must be at least 1, got {limit}")
    stored = open_stored(resolve_url(storage), study)
    every = stored_front_rows(stored)
    if every is None:  # an older study: its trials do not hold the rows, so they are recomputed
        from prune_search.search.study import open_study
        from prune_search.search.summary import front_rows

        every = front_rows(open_study(stored.url, study))
    rows = spread(every, limit) if limit is not None else every
    names = stored.group_names()

    def table() -> None:
        shown = f"{len(rows)} of {len(every)}" if len(rows) < len(every) else f"all {len(every)}"
        typer.echo(f"front of study '{study}': {shown} trials; groups, in the order of the keep columns:")
        typer.echo("  " + ", ".join(names))
        print_front(rows, stored.config["proxy"])

    output.results(rows, table)
