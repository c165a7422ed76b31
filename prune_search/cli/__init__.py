"""The ``prune-search`` command line: every command, in modules named for what they do.

``app`` is the Typer application (commands load on first use, see :mod:`prune_search.cli.app`);
``main`` is the console-script entry point. Option types shared by the commands: :mod:`prune_search.cli.options`.
"""

from prune_search.cli.app import app, main

__all__ = ["app", "main"]
