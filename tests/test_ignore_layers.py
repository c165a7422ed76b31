"""``--ignore-layers``: stored with a study's space and reused by joining workers, checked like every other
flag; unknown names and traces that run out of time end in one line."""

import json
import threading

import pytest
from cli_helpers import assert_one_line_error, run_cli
from torch_pruning.dependency import Dependency

from prune_search.search import StartOptions, open_study
from prune_search.search.config import contradictions
from prune_search.search.study_note import note_markdown
from prune_search.space.deadline import TRACE_TIMEOUT_ENV, WORKER_NAME

SMALL_STUDY = (
    "--model", "mlp", "--proxy", "taylor_loss", "--evaluations", "0", "--population", "8",
    "--calibration-batches", "1", "--device", "cpu", "--no-progress",
)  # fmt: skip


def test_ignored_layers_are_stored_reused_by_joiners_and_a_different_list_is_refused(mlp_checkpoint, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    created = run_cli(
        "start", "--study", "s", "--storage", url, "--checkpoint", str(mlp_checkpoint), *SMALL_STUDY,
        "--trials", "8", "--ignore-layers", "net.1",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr[-2000:]
    handle = open_study(url, "s")
    assert handle.config["space"]["ignored_layers"] == ["net.1"]
    assert handle.space.names == ["net.3"]
    assert "ignored layers (never pruned): `net.1`" in note_markdown(handle)

    joined = run_cli("start", "--study", "s", "--storage", url, "--trials", "16", "--no-progress")
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert "joined study 's'" in joined.stdout
    assert len(open_study(url, "s").study.get_trials(deepcopy=False)) == 16
    same = run_cli("start", "--study", "s", "--storage", url, "--trials", "16", "--ignore-layers", " net.1 ")
    assert same.returncode == 0, same.stderr[-2000:]

    other = run_cli("start", "--study", "s", "--storage", url, "--trials", "24", "--ignore-layers", "net.3")
    assert_one_line_error(other, "study 's' exists with another configuration", "--ignore-layers net.3", "has net.1")
    none = run_cli("start", "--study", "s", "--storage", url, "--trials", "24", "--ignore-layers", "")
    assert_one_line_error(none, "--ignore-layers none (the study has net.1)")


def test_a_study_made_before_ignored_layers_were_stored_has_none():
    old = {"flags": {}, "space": {"min_ratio": 0.1}, "model": {"options": {}}}
    assert contradictions(old, StartOptions(ignored_layers=[])) is None
    assert contradictions(old, StartOptions(ignored_layers=["net.1"])) == "--ignore-layers net.1 (the study has none)"


@pytest.mark.parametrize("command", ["start", "sensitivity", "iterative"])
def test_an_unknown_layer_name_is_one_line_listing_valid_names(command, mlp_checkpoint, tmp_path):
    checkpoint = ("--checkpoint", str(mlp_checkpoint))
    args = {
        "start": ("start", "--study", "u", "--storage", f"sqlite:///{tmp_path / 's.db'}", *checkpoint, *SMALL_STUDY),
        "sensitivity": ("sensitivity", "--model", "mlp", *checkpoint, "--out", str(tmp_path / "o"), "--no-progress"),
        "iterative": ("iterative", *checkpoint, "--out", str(tmp_path / "o"), "--no-progress"),
    }[command]
    result = run_cli(*args, "--ignore-layers", "net.1,net.9")
    assert_one_line_error(result, "ignored layer 'net.9' is not a module of the model", "e.g. net.1, net.3, net.5")


def test_sensitivity_records_the_ignored_layers_and_says_to_pass_them_to_start(mlp_checkpoint, tmp_path):
    result = run_cli(
        "sensitivity", "--model", "mlp", "--checkpoint", str(mlp_checkpoint), "--out", str(tmp_path / "o"),
        "--ratios", "0.5", "--ignore-layers", "net.3", "--device", "cpu", "--no-progress", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    scan = json.loads(result.stdout)
    assert scan["config"]["ignored_layers"] == ["net.3"]
    assert [group["name"] for group in scan["groups"]] == ["net.1"]
    assert "--ignore-layers net.3 --sensitivity" in result.stderr


@pytest.fixture
def slow_grouping(monkeypatch):
    """Every torch-pruning group takes until the test ends to compute (each of its dependencies' checks)."""
    done = threading.Event()
    triggered = Dependency.is_triggered_by

    def slow(self, *args, **kwargs):
        done.wait(60)
        return triggered(self, *args, **kwargs)

    monkeypatch.setattr(Dependency, "is_triggered_by", slow)
    yield
    done.set()
    for thread in threading.enumerate():  # the trace left running ends before the next test
        if thread.name == WORKER_NAME:
            thread.join(30)


def test_a_trace_that_runs_out_of_time_is_one_line_naming_the_layer(slow_grouping, mlp_checkpoint, tmp_path):
    result = run_cli(
        "sensitivity", "--model", "mlp", "--checkpoint", str(mlp_checkpoint), "--out", str(tmp_path / "o"),
        "--device", "cpu", "--no-progress", env={TRACE_TIMEOUT_ENV: "0.5"},
    )  # fmt: skip
    assert_one_line_error(
        result,
        "building the pruning space of MLP took more than 0.5 s",
        "it was grouping the channels of layer 'net.",
        "pass --ignore-layers net.",
        f"allow more time with ${TRACE_TIMEOUT_ENV}",
    )


def test_torch_pruning_failing_inside_its_grouping_is_one_line_naming_the_layer(monkeypatch, mlp_checkpoint, tmp_path):
    def broken(self, *args, **kwargs):  # what torch-pruning did on Swin-S: int + None deep in its index mapping
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(Dependency, "is_triggered_by", broken)
    result = run_cli(
        "sensitivity", "--model", "mlp", "--checkpoint", str(mlp_checkpoint), "--out", str(tmp_path / "o"),
        "--device", "cpu", "--no-progress",
    )  # fmt: skip
    assert_one_line_error(
        result,
        "building the pruning space of MLP failed while grouping the channels of layer 'net.",
        "(TypeError: unsupported operand type(s) for +: 'int' and 'NoneType')",
        "pass --ignore-layers net.",
    )
