"""Shared fixtures: small real data."""

import pytest

from prune_search.data import DataSpec, load_dataset


@pytest.fixture(scope="session")
def digits():
    return load_dataset(DataSpec("digits"))
