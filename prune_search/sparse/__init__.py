"""Fine-grained (unstructured) magnitude pruning: masks, storage sizes, sparse checkpoints.

The masks and the storage sizes live in ``prune_search.training`` (fine-tuning holds the
masks, ``finalize`` reports the sizes); they are re-exported here.
"""

from prune_search.sparse.checkpoint import load_sparse, save_sparse
from prune_search.training.masks import MaskSet, check_sparsity, magnitude_mask, magnitude_masks
from prune_search.training.sparse_size import storage_report, to_csr

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
