"""The ``prune-search`` command line: every command, in modules named for what they do.

``app`` is the Typer application (commands load on first use, see :mod:`prune_search.cli.app`);
``main`` is the console-script entry point. Shared by the commands: :mod:`prune_search.cli.output` (results by
``--format``), :mod:`prune_search.cli.storage_options` (``--study``, ``--storage``; both torch-free) and
:mod:`prune_search.cli.options` (model, data and fine-tuning options).
"""

from prune_search.cli.app import app, main

__all__ = ["app", "main"]
