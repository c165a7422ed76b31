"""Datasets by name with deterministic train / val / test splits."""

from prune_search.data.bundle import DatasetBundle
from prune_search.data.catalog import available_datasets, default_data_root, load_dataset
from prune_search.data.spec import DataSpec

__all__ = ["DataSpec", "DatasetBundle", "available_datasets", "default_data_root", "load_dataset"]
