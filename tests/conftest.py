"""Shared fixtures: real data, trained base models, storage URLs; markers that skip with a reason.

Trained checkpoints are made once per test run, shared by pytest-xdist workers through a file lock.
Torch runs one thread per process: the CI machine has 2 cores and the suite runs on two workers.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; subprocesses inherit it

from pathlib import Path

import pytest
import torch
from filelock import FileLock
from services import MARIADB, POSTGRES, databases_missing, fashion_mnist_missing, new_database, unavailable

from prune_search.data import DataSpec, load_dataset
from prune_search.training import TrainConfig, train_baseline

torch.set_num_threads(1)

pytest_plugins = ["strict_skips"]
REQUIREMENTS = {"db": databases_missing, "dataset": fashion_mnist_missing}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a ``db``/``dataset`` test whose service or package is missing, with the reason; fail it in strict mode."""
    for marker, missing in REQUIREMENTS.items():
        if item.get_closest_marker(marker):
            unavailable(missing())


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this run sees (the run's base temp folder without xdist)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "trained"
    folder.mkdir(exist_ok=True)
    return folder


def trained(tmp_path_factory: pytest.TempPathFactory, config: TrainConfig) -> Path:
    """The checkpoint of ``config`` trained on CPU, once per test run."""
    out = _shared_dir(tmp_path_factory) / f"{config.model}-{config.data.name}-e{config.epochs}-s{config.seed}.pt"
    with FileLock(f"{out}.lock"):
        if not out.is_file():
            train_baseline(config, out, progress=False, device="cpu")
    return out


@pytest.fixture(scope="session")
def digits():
    return load_dataset(DataSpec("digits"))


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory):
    """A resnet20 trained for 3 epochs on digits: a real base model for search tests."""
    return trained(tmp_path_factory, TrainConfig(model="resnet20", epochs=3))


@pytest.fixture(scope="session")
def resnet20_checkpoint(tmp_path_factory):
    """A resnet20 trained for 8 epochs on digits: accurate enough that fine-tuning and proxies have signal."""
    return trained(tmp_path_factory, TrainConfig(model="resnet20", epochs=8))


@pytest.fixture(scope="session")
def mlp_checkpoint(tmp_path_factory):
    """The default mlp (64-256-64-10 on digits) trained for 15 epochs."""
    return trained(tmp_path_factory, TrainConfig(model="mlp", epochs=15))


@pytest.fixture
def sqlite_url(tmp_path):
    """A new SQLite file URL, one per test."""
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture(
    params=[pytest.param(POSTGRES, marks=pytest.mark.db), pytest.param(MARIADB, marks=pytest.mark.db)],
    ids=["postgresql", "mariadb"],
)
def fresh_database(request):
    """A new, empty database on each server, dropped afterwards: workers must create the schema."""
    with new_database(request.param) as url:
        yield url
