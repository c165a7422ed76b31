"""Shared fixtures: small real data."""

import pytest

from prune_search.data import DataSpec, load_dataset
from prune_search.training import TrainConfig, train_baseline


@pytest.fixture(scope="session")
def digits():
    return load_dataset(DataSpec("digits"))


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory):
    """A resnet20 trained for 3 epochs on digits: a real base model for search tests."""
    out = tmp_path_factory.mktemp("base") / "resnet20-digits.pt"
    train_baseline(TrainConfig(model="resnet20", epochs=3), out, progress=False, device="cpu")
    return out
