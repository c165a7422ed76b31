"""``prune-search report``: the study's self-contained HTML report.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from pathlib import Path
from typing import Annotated

import typer

from prune_search.cli.output import quiet_optuna, require_parent_folder
from prune_search.cli.storage_options import ExistingStudyOpt, StorageOpt
from prune_search.report import write_report
from prune_search.search.stored import open_stored
from prune_search.storage import resolve_url

ReportFileOpt = Annotated[Path, typer.Option("--out", help="HTML file to write; its folder must exist.")]


def report(
    study: ExistingStudyOpt,
    out: ReportFileOpt = Path("report.html"),
    storage: StorageOpt = None,
) -> None:
    require_parent_folder(out)
    quiet_optuna()
    path = write_report(open_stored(resolve_url(storage), study), out)
    typer.echo(f"wrote {path} (opens offline in any browser since 2023)")
