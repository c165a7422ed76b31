"""Torch's CPU threads are picked for the model: one for small models unless the user says otherwise."""

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec, build_model
from prune_search.threads import SMALL_MACS, THREADS_ENV, pick_threads, set_threads_for


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    yield
    torch.set_num_threads(before)


def test_small_models_get_one_thread_and_large_ones_keep_torchs(restore_threads):
    torch.set_num_threads(2)
    model = build_model(ModelSpec("resnet20", 1, 10, 8))
    assert set_threads_for(model, torch.zeros(1, 1, 8, 8)) == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    assert pick_threads(SMALL_MACS) == 2


def test_the_users_choice_wins(restore_threads, monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert pick_threads(1000) == 3
    monkeypatch.delenv(THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert pick_threads(1000) == 2
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(PruneSearchError, match="must be a whole number of at least 1, got 'two'"):
        pick_threads(1000)


def test_a_bad_thread_count_is_one_line_before_any_work():
    assert_one_line_error(run_cli("--threads", "0", "models"), "--threads", "at least 1, got '0'")
    assert_one_line_error(run_cli("models", env={THREADS_ENV: "many"}), THREADS_ENV, "got 'many'")
    assert run_cli("--threads", "1", "models").returncode == 0
