"""The elastic checkpoint file: plain data and tensors, read with ``torch.load(weights_only=True)``."""

from pathlib import Path

import torch

from prune_search.elastic.model import ElasticModel
from prune_search.errors import PruneSearchError
from prune_search.training.checkpoint import VERSION, save_checkpoint

FORMAT = "prune-search/elastic"
CHECKPOINT_FILE = "elastic.pt"


def save_elastic(model: ElasticModel, path: Path) -> None:
    """Write ``model`` to ``path`` atomically (no pickled module: only dicts, lists, numbers, tensors)."""
    save_checkpoint({"format": FORMAT, **model.payload()}, path)


def load_elastic(path: str | Path, *, trusted_factory: str | None = None) -> ElasticModel:
    """The elastic model stored at ``path`` (the file, or the folder ``prune-search elastic`` wrote),
    on the CPU in eval mode with its largest level active; ``set_width(level)`` switches.

    A stored ``package.module:factory`` model is built only if it is ``trusted_factory``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise PruneSearchError(f"elastic checkpoint {path} does not exist; write one with 'prune-search elastic'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PruneSearchError(f"{path} is not a readable elastic checkpoint ({reason[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PruneSearchError(f"{path} is not an elastic checkpoint; write one with 'prune-search elastic'")
    if payload.get("version") != VERSION:
        raise PruneSearchError(
            f"{path} has checkpoint version {payload.get('version')}; this prune-search reads {VERSION}"
        )
    try:
        model = ElasticModel.from_payload(payload, trusted_factory=trusted_factory)
    except (KeyError, TypeError, ValueError) as exc:
        raise PruneSearchError(f"{path} is an incomplete elastic checkpoint ({type(exc).__name__}: {exc})") from None
    return model.eval()
