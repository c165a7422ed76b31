"""prune-search: multi-objective architecture search for structured pruning, on Optuna."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prune-search")
except PackageNotFoundError:
    __version__ = "0+unknown"
