"""Baselines trained on first use and cached, for the embedded default study."""

import os
from pathlib import Path

from prune_search.data import DataSpec
from prune_search.training.baseline import TrainConfig, train_baseline


def cache_dir() -> Path:
    """``$PRUNE_SEARCH_CACHE`` or ``~/.cache/prune-search``."""
    env = os.environ.get("PRUNE_SEARCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "prune-search"


def cached_baseline(model: str, data: DataSpec, *, device: str = "auto", progress: bool = True) -> Path:
    """The checkpoint of ``model`` trained on ``data`` with the default recipe, trained if missing."""
    out = cache_dir() / "baselines" / f"{data.name.replace(':', '_').replace('/', '_')}-{model}.pt"
    if not out.is_file():
        config = TrainConfig(model=model, data=data)
        train_baseline(config, out, overwrite=True, device=device, progress=progress)
    return out
