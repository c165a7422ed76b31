"""``python -m prune_search`` runs the CLI."""

from prune_search.cli import main

main()
