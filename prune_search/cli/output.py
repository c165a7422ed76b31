"""How commands print their results (``--format`` table, json or csv), check the files they are to write and keep
Optuna quiet; no torch."""

import csv
import io
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from prune_search.errors import PruneSearchError

FORMATS = ("table", "json", "csv")
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        help="Results on stdout as a table, json or csv; with json or csv every other line goes to stderr.",
    ),
]


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One CSV row: nested dicts become ``key/sub`` columns, lists JSON text."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flat(value, f"{name}/")
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = value
    return out


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV text: a header of every column any row has, nested dicts flattened (``keep/conv1``)."""
    flat = [_flat(row) for row in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in flat for k in row)), restval="")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue().rstrip()


def echo_table(lines: list[list[str]], right: bool = False, echo: Callable[[str], None] = typer.echo) -> None:
    """``lines`` (the first one the header) in aligned columns; ``right``: all but the first column right-aligned."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = [
            cell.rjust(width) if right and i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        echo("  ".join(cells).rstrip())


class Output:
    """Where a command prints, by ``--format``: its results on stdout as a table, JSON or CSV.

    With json or csv, every other line (progress, notes, the files written) goes to stderr, so stdout parses.
    """

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise PruneSearchError(f"--format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}, got '{fmt}'")
        self.fmt = fmt

    @property
    def table(self) -> bool:
        return self.fmt == "table"

    def note(self, text: str) -> None:
        """A line that is not the results: stdout under the table format, else stderr (between progress bars)."""
        tqdm.write(text, file=sys.stdout if self.table else sys.stderr)

    def results(
        self, records: Any, table: Callable[[], None] | None = None, rows: list[dict[str, Any]] | None = None
    ) -> None:
        """``records`` as JSON; ``rows`` (default: ``records``, a list of dicts) as CSV; or ``table()`` (None: the
        table is printed already, line by line through :meth:`note`)."""
        if self.fmt == "json":
            typer.echo(json.dumps(records, indent=1, default=str))
        elif self.fmt == "csv":
            typer.echo(csv_text(records if rows is None else rows))
        elif table is not None:
            table()


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def require_parent_folder(out: Path, flag: str = "--out") -> None:
    """A one-line error unless the folder that is to hold the file ``out`` (named by ``flag``) exists and
    ``out`` is not itself a folder."""
    folder = out.parent
    if not folder.is_dir():
        raise PruneSearchError(f"{flag} {out}: the folder {folder} does not exist; create it first")
    if out.is_dir():
        raise PruneSearchError(f"{flag} {out} is a folder; name a file to write in it")
