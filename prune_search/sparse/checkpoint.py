"""The sparse checkpoint: sparsified weights as real CSR tensors, the rest dense, loadable safely.

The file is a plain dict (no pickled objects) that ``torch.load(path, weights_only=True)``
reads: ``format``, ``version``, ``model`` (the model spec), ``tensors`` (state_dict entries;
sparsified weights as 2-D CSR tensors with int32 indices) and ``shapes`` (the original shape
of every CSR entry).
"""

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec, build_model
from prune_search.training.checkpoint import save_checkpoint
from prune_search.training.sparse_size import quiet_sparse, to_csr

SPARSE_FORMAT = "prune-search/sparse-weights"


def save_sparse(model: nn.Module, spec: ModelSpec, sparse_names: Iterable[str], path: Path) -> int:
    """Write ``model``'s state_dict with ``sparse_names`` as CSR to ``path``; return the file size in bytes."""
    sparse = set(sparse_names)
    tensors, shapes = {}, {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if name in sparse:
            tensors[name] = to_csr(tensor)
            shapes[name] = list(tensor.shape)
        else:
            tensors[name] = tensor
    with quiet_sparse():
        save_checkpoint({"format": SPARSE_FORMAT, "model": spec.to_dict(), "tensors": tensors, "shapes": shapes}, path)
    return path.stat().st_size


def load_sparse(path: Path, *, trusted_factory: str | None = None) -> nn.Module:
    """The model stored by :func:`save_sparse` (built from its spec, dense weights restored), in eval mode.

    A stored ``package.module:factory`` model is built only if it is ``trusted_factory``.
    """
    try:
        with quiet_sparse():
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise PruneSearchError(f"{path} is not a readable sparse checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != SPARSE_FORMAT:
        raise PruneSearchError(f"{path} is not a prune-search sparse checkpoint")
    state = {
        name: tensor.to_dense().reshape(payload["shapes"][name]) if name in payload["shapes"] else tensor
        for name, tensor in payload["tensors"].items()
    }
    model = build_model(
        ModelSpec.from_dict(payload.get("model")), trusted_factory=trusted_factory, source=f"sparse checkpoint {path}"
    )
    model.load_state_dict(state)
    return model.eval()
