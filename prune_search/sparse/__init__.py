"""Fine-grained (unstructured) magnitude pruning: masks, storage sizes, sparse checkpoints, command."""

from prune_search.sparse.checkpoint import load_sparse, save_sparse
from prune_search.sparse.masks import MaskSet, check_sparsity, magnitude_mask, magnitude_masks
from prune_search.sparse.size import storage_report, to_csr

__all__ = [
    "MaskSet",
    "check_sparsity",
    "load_sparse",
    "magnitude_mask",
    "magnitude_masks",
    "save_sparse",
    "storage_report",
    "to_csr",
]
