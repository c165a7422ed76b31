"""What the zoo holds: ``models`` and ``datasets``.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

import typer

from prune_search.data import available_datasets
from prune_search.models import available_models


def models_command() -> None:
    for name in available_models():
        typer.echo(name)
    typer.echo("tv:<name>  (any torchvision classification model, random init)")
    typer.echo("package.module:factory  (your own model)")


def datasets_command() -> None:
    for name in available_datasets():
        typer.echo(name)
