"""What the zoo holds: ``models`` and ``datasets``.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

import typer

from prune_search.cli.output import FormatOpt, Output
from prune_search.data import available_datasets
from prune_search.models import available_models


def models_command(fmt: FormatOpt = "table") -> None:
    output = Output(fmt)
    names = list(available_models())

    def table() -> None:
        for name in names:
            typer.echo(name)
        typer.echo("tv:<name>  (any torchvision classification model, random init)")
        typer.echo("timm:<name>  (any timm model, random init; pip install 'prune-search[timm]')")
        typer.echo("package.module:factory  (your own model)")

    output.results(names, table, rows=[{"model": name} for name in names])


def datasets_command(fmt: FormatOpt = "table") -> None:
    output = Output(fmt)
    names = list(available_datasets())

    def table() -> None:
        for name in names:
            typer.echo(name)

    output.results(names, table, rows=[{"dataset": name} for name in names])
