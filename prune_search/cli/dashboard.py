"""``prune-search dashboard``: optuna-dashboard on the study's storage and artifact store.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from pathlib import Path
from typing import Annotated

import optuna_dashboard
import typer
from optuna.artifacts import FileSystemArtifactStore

from prune_search.cli.options import StorageOpt, StudyOpt, quiet_optuna
from prune_search.search import open_study
from prune_search.storage import resolve_url


def dashboard(
    study: StudyOpt,
    storage: StorageOpt = None,
    artifact_dir: Annotated[Path, typer.Option(help="Optuna artifact store folder.")] = Path("prune-search-artifacts"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    quiet_optuna()
    url = resolve_url(storage)
    handle = open_study(url, study)
    typer.echo(f"optuna-dashboard for '{study}' at http://{host}:{port}/dashboard/studies/{handle.study_id}")
    optuna_dashboard.run_server(url, host=host, port=port, artifact_store=FileSystemArtifactStore(str(artifact_dir)))
