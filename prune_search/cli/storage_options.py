"""Options that name a study and where it is stored (``--study``, ``--storage``, ``--checkpoint``,
``--artifact-dir``); plain types, no torch."""

from pathlib import Path
from typing import Annotated

import typer

from prune_search.storage.url import DEFAULT_URL, ENV_VAR

CreateOrJoinStudyOpt = Annotated[
    str, typer.Option("--study", help="Study name: created if missing, joined if present.")
]
ExistingStudyOpt = Annotated[
    str, typer.Option("--study", help="Name of an existing study in the storage ('prune-search studies' lists them).")
]
StudyCheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", help="Path of the study's base checkpoint here (default: the path it recorded)."),
]
ArtifactDirOpt = Annotated[
    Path, typer.Option("--artifact-dir", help="Optuna artifact store folder (finalize creates it if missing).")
]
ARTIFACT_DIR = Path("prune-search-artifacts")
StorageOpt = Annotated[
    str | None, typer.Option("--storage", help=f"Storage URL (else ${ENV_VAR}, else {DEFAULT_URL}).")
]
