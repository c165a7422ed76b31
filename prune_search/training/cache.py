"""Baselines trained on first use and cached, for the embedded default study."""

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from prune_search.data import DataSpec
from prune_search.training.baseline import TrainConfig, train_baseline


def cache_dir() -> Path:
    """``$PRUNE_SEARCH_CACHE`` or ``~/.cache/prune-search``."""
    env = os.environ.get("PRUNE_SEARCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "prune-search"


def cached_path(model: str, data: DataSpec, model_options: dict[str, Any] | None = None) -> Path:
    """Where the baseline of ``model`` (built with ``model_options``) on ``data`` is cached.

    The name carries a digest of the model options, so ``--model-option`` picks its own baseline.
    """
    stem = "-".join(name.replace(":", "_").replace("/", "_") for name in (data.name, model))
    if model_options:
        digest = hashlib.sha256(json.dumps(model_options, sort_keys=True).encode()).hexdigest()[:10]
        stem += f"-{digest}"
    return cache_dir() / "baselines" / f"{stem}.pt"


def cached_baseline(
    model: str,
    data: DataSpec,
    *,
    model_options: dict[str, Any] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """The checkpoint of ``model`` (with ``model_options``) trained on ``data`` with the default recipe,
    trained if missing."""
    out = cached_path(model, data, model_options)
    if not out.is_file():
        if progress:
            print(f"training the baseline {model} on {data.name} (first use only; cached in {out})", file=sys.stderr)
        config = TrainConfig(model=model, model_options=dict(model_options or {}), data=data)
        train_baseline(config, out, overwrite=True, device=device, progress=progress)
    return out
