"""``prune-search dashboard``: optuna-dashboard on the study's storage and artifact store.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from typing import Annotated

import optuna_dashboard
import typer
from optuna.artifacts import FileSystemArtifactStore

from prune_search.cli.options import ARTIFACT_DIR, ArtifactDirOpt, ExistingStudyOpt, StorageOpt, quiet_optuna
from prune_search.search import open_study
from prune_search.storage import resolve_url


def dashboard(
    study: ExistingStudyOpt,
    storage: StorageOpt = None,
    artifact_dir: ArtifactDirOpt = ARTIFACT_DIR,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    quiet_optuna()
    url = resolve_url(storage)
    handle = open_study(url, study)
    typer.echo(f"optuna-dashboard for '{study}' at http://{host}:{port}/dashboard/studies/{handle.study_id}")
    optuna_dashboard.run_server(url, host=host, port=port, artifact_store=FileSystemArtifactStore(str(artifact_dir)))
