"""prune-search: multi-objective architecture search for structured pruning, on Optuna."""

from importlib.metadata import PackageNotFoundError, version

from prune_search.finalize.export import load_pruned

try:
    __version__ = version("prune-search")
except PackageNotFoundError:
    __version__ = "0+unknown"


__all__ = ["__version__", "load_pruned"]
