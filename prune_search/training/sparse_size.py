"""Storage size of a sparsified model: dense fp32, CSR and bitmask, counted on real tensors.

- dense: ``numel × element size`` of every state_dict tensor (fp32 weights: 4 bytes each).
- CSR: each sparsified weight viewed as 2-D ``[out, in·kh·kw]`` (Linear: ``[out, in]``) and
  converted with ``to_sparse_csr()``; its indices are stored as int32 (they fit for any
  tensor below 2³¹ entries), so the bytes are ``values`` (4·nnz) + ``col_indices`` (4·nnz)
  + ``crow_indices`` (4·(rows + 1)).
- bitmask: the nonzero values (4·nnz) + one bit per entry (``ceil(numel / 8)`` bytes).
Tensors that are not sparsified (biases, BN, a dense classifier) count at their dense size
in every format.
"""

import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

INDEX_DTYPE = torch.int32


@contextmanager
def quiet_sparse() -> Iterator[None]:
    """Silence torch's "sparse CSR support is in beta" and invariant-check notices."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*[Ss]parse invariant checks.*")
        warnings.filterwarnings("ignore", message=".*[Vv]alidating sparse tensor invariants.*")
        yield


def to_csr(tensor: Tensor) -> Tensor:
    """``tensor`` (``dim ≥ 2``) as a 2-D ``[shape[0], numel / shape[0]]`` CSR tensor with int32 indices."""
    with quiet_sparse():
        csr = tensor.detach().reshape(tensor.shape[0], -1).to_sparse_csr()
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(INDEX_DTYPE),
            csr.col_indices().to(INDEX_DTYPE),
            csr.values(),
            csr.shape,
            check_invariants=True,
        )


def csr_nbytes(csr: Tensor) -> int:
    """Bytes of a CSR tensor's values + column indices + row pointers."""
    parts = (csr.values(), csr.col_indices(), csr.crow_indices())
    return sum(part.numel() * part.element_size() for part in parts)


def dense_nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def bitmask_nbytes(tensor: Tensor) -> int:
    """Nonzero values at the tensor's element size plus one bit per entry."""
    return int(torch.count_nonzero(tensor)) * tensor.element_size() + math.ceil(tensor.numel() / 8)


@dataclass(frozen=True)
class TensorSize:
    """One state_dict entry: shape, entries, nonzeros and bytes in each format."""

    name: str
    shape: list[int]
    numel: int
    nonzeros: int
    sparse: bool
    dense_bytes: int
    csr_bytes: int
    bitmask_bytes: int


def tensor_size(name: str, tensor: Tensor, sparse: bool) -> TensorSize:
    """Sizes of one tensor; a tensor that is not ``sparse`` costs its dense bytes in every format."""
    dense = dense_nbytes(tensor)
    return TensorSize(
        name,
        list(tensor.shape),
        tensor.numel(),
        int(torch.count_nonzero(tensor)),
        sparse,
        dense,
        csr_nbytes(to_csr(tensor)) if sparse else dense,
        bitmask_nbytes(tensor) if sparse else dense,
    )


def storage_report(model: nn.Module, sparse_names: Iterable[str]) -> dict[str, Any]:
    """Nonzeros and bytes of ``model`` with the state_dict entries ``sparse_names`` stored sparse.

    ``sparsified_*`` counts cover the sparse tensors only (``sparsity`` = their share of
    zeros); ``params``/``nonzero_params`` cover every parameter; ``*_bytes`` cover the whole
    state_dict (buffers included); ``tensors`` lists every entry.
    """
    sparse = set(sparse_names)
    state = model.state_dict()
    unknown = sparse - set(state)
    if unknown:
        raise KeyError(f"not in the state_dict: {sorted(unknown)}")
    sizes = [tensor_size(name, tensor, name in sparse) for name, tensor in state.items()]
    chosen = [s for s in sizes if s.sparse]
    numel = sum(s.numel for s in chosen)
    nonzeros = sum(s.nonzeros for s in chosen)
    parameters = list(model.parameters())
    return {
        "sparsified_tensors": len(chosen),
        "sparsified_numel": numel,
        "sparsified_nonzeros": nonzeros,
        "sparsity": 1 - nonzeros / numel if numel else 0.0,
        "params": sum(p.numel() for p in parameters),
        "nonzero_params": sum(int(torch.count_nonzero(p)) for p in parameters),
        "dense_bytes": sum(s.dense_bytes for s in sizes),
        "csr_bytes": sum(s.csr_bytes for s in sizes),
        "bitmask_bytes": sum(s.bitmask_bytes for s in sizes),
        "tensors": [asdict(s) for s in sizes],
    }
