"""Iterative prune-retrain on the digits MLP: schedules, stopping rule, dead networks, export."""

import csv
import json

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from typer.testing import CliRunner

import prune_search
import prune_search.finalize.tune as tune_module
from prune_search.cli import app
from prune_search.errors import PruneSearchError
from prune_search.finalize.export import export
from prune_search.finalize.tune import FinalizeConfig
from prune_search.iterative import (
    IterativeConfig,
    fraction_schedule,
    geometric_schedule,
    run_iterative,
    top_class_share,
)
from prune_search.iterative.loop import step_space
from prune_search.iterative.schedule import parse_fractions
from prune_search.models import ModelSpec
from prune_search.training import load_model

CPU = torch.device("cpu")
SEED_SCHEDULE = {  # t: (N1, N2) of the interval-adjoint seed's retain.txt, 256/64 neurons, q = 0.8
    1: (205, 51), 2: (164, 41), 3: (131, 33), 4: (105, 26), 5: (84, 21), 6: (67, 17), 7: (54, 13),
    8: (43, 11), 9: (34, 9), 10: (27, 7), 11: (22, 5), 12: (18, 4), 13: (14, 4), 14: (11, 3), 15: (9, 2),
    16: (7, 2), 17: (6, 1), 18: (5, 1), 19: (4, 1), 20: (3, 1), 21: (2, 1), 24: (1, 1),
}  # fmt: skip


@pytest.fixture
def base(mlp_checkpoint):
    model, _ = load_model(mlp_checkpoint)
    return model.eval(), step_space(model, [1, 1, 8, 8], 1)


def test_geometric_schedule_reproduces_the_seed_retention_table():
    steps = geometric_schedule({"fc1": 256, "fc2": 64}, 0.8)
    assert {s.t: (s.keep["fc1"], s.keep["fc2"]) for s in steps} == SEED_SCHEDULE
    assert len(geometric_schedule({"fc1": 256, "fc2": 64}, 0.8, max_steps=3)) == 3


def test_fraction_schedule_removes_a_share_of_the_current_channels_down_to_the_floor():
    steps = fraction_schedule({"a": 10, "b": 3}, [0.2, 0.2, 0.2, 0.5, 0.5], min_keep=2)
    assert [(s.t, s.keep) for s in steps] == [
        (1, {"a": 8, "b": 2}),
        (2, {"a": 6, "b": 2}),
        (3, {"a": 5, "b": 2}),
        (4, {"a": 2, "b": 2}),
    ]
    assert [s.keep for s in geometric_schedule({"a": 3}, 0.1)] == [{"a": 1}]
    assert fraction_schedule({"a": 2}, [0.5], min_keep=2) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda: geometric_schedule({"a": 8}, 1.0),
        lambda: geometric_schedule({"a": 8}, 0.0),
        lambda: geometric_schedule({"a": 8}, 0.5, min_keep=0),
        lambda: fraction_schedule({"a": 8}, [0.2, 1.0]),
        lambda: fraction_schedule({"a": 8}, []),
        lambda: parse_fractions("0.2,x"),
        lambda: IterativeConfig(FinalizeConfig(epochs=0)).validate(),
        lambda: IterativeConfig(criterion="nope").validate(),
    ],
)
def test_bad_schedules_and_settings_are_refused(call):
    with pytest.raises(PruneSearchError):
        call()


def test_the_dead_network_detector_fires_on_a_constant_output_model(base, digits):
    model, _ = base
    loader = digits.loader("val", 512)
    assert top_class_share(model, loader, CPU)[1] < 0.5
    with torch.no_grad():
        model.net[5].weight.zero_()
        model.net[5].bias.copy_(torch.arange(10.0) == 3)
    assert top_class_share(model, loader, CPU) == (3, 1.0)


def test_the_loop_stops_at_the_accuracy_threshold_and_keeps_the_last_step_within(base, digits, tmp_path):
    model, space = base
    schedule = geometric_schedule({g.name: g.size for g in space.groups}, 0.5)
    config = IterativeConfig(FinalizeConfig(epochs=1, kd=False), max_drop=10.0)
    result = run_iterative(model, space, schedule, digits, config, tmp_path / "state.pt", device=CPU, progress=False)
    assert result.stop_reason == "below-threshold"
    assert 2 <= len(result.steps) < len(schedule)
    *within, last = result.steps
    assert last.status == "below-threshold" and 100 * (result.base_val_acc - last.val_acc) > 10.0
    assert all(s.status == "ok" and 100 * (result.base_val_acc - s.val_acc) <= 10.0 for s in within)
    assert result.best == within[-1]
    assert [result.model.net[1].out_features, result.model.net[3].out_features] == list(within[-1].keep.values())
    assert not (tmp_path / "state.pt").exists()


def test_a_multi_step_export_loads_back_with_identical_logits(base, digits, tmp_path):
    model, space = base
    schedule = fraction_schedule({g.name: g.size for g in space.groups}, [0.3, 0.3, 0.3])
    config = IterativeConfig(FinalizeConfig(epochs=1), max_drop=100.0)
    result = run_iterative(model, space, schedule, digits, config, tmp_path / "state.pt", device=CPU, progress=False)
    assert [s.status for s in result.steps] == ["ok", "ok", "ok"]
    assert result.best == result.steps[-1]
    assert [s.keep for s in result.steps] == [s.keep for s in schedule]
    pruned = result.model
    assert [pruned.net[1].out_features, pruned.net[3].out_features] == list(schedule[-1].keep.values())
    assert sum(p.numel() for p in pruned.parameters()) == result.best.params
    assert len(result.plan.history) == 6
    export(pruned, result.plan, ModelSpec("mlp", 1, 10, 8), {}, tmp_path / "out")
    loaded = prune_search.load_pruned(tmp_path / "out")
    x, _ = next(iter(digits.loader("test", 128)))
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))


def _kill_at_step(step):
    """``fit`` that turns step ``step``'s result into a constant-class network (recipe seed = step at seed 0)."""
    real_fit = tune_module.fit

    def fit(model, bundle, recipe, *args, **kwargs):
        fitted = real_fit(model, bundle, recipe, *args, **kwargs)
        if recipe.seed == step:
            fitted.best_state["net.5.weight"].zero_()
            fitted.best_state["net.5.bias"].copy_(torch.arange(10.0) == 7)
        return fitted

    return fit


def test_a_dead_step_is_reported_and_never_the_result(mlp_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setattr(tune_module, "fit", _kill_at_step(2))
    out = tmp_path / "run"
    args = ["iterative", "--checkpoint", str(mlp_checkpoint), "--out", str(out), "--fractions", "0.3,0.3,0.3"]
    args += ["--epochs-per-step", "1", "--max-drop", "100", "--device", "cpu", "--no-progress"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    assert "DEAD NETWORK" in run.output and "class 7 for 100.0 %" in run.output
    result = json.loads((out / "result.json").read_text())
    assert [s["status"] for s in result["steps"]] == ["ok", "dead"]
    assert result["stop_reason"] == "dead" and result["best_step"] == 1
    rows = list(csv.DictReader((out / "steps.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "dead"]
    loaded = prune_search.load_pruned(out)
    assert loaded.net[1].out_features == result["steps"][0]["keep"]["net.1"]


def test_cli_runs_a_geometric_schedule(mlp_checkpoint, tmp_path):
    out = tmp_path / "geo"
    args = ["--checkpoint", str(mlp_checkpoint), "--out", str(out), "--device", "cpu", "--no-progress"]
    done = run_cli("iterative", *args, "--q", "0.6", "--max-steps", "2", "--epochs-per-step", "1")
    assert done.returncode == 0, done.stderr
    assert "step  t    status" in done.stdout
    result = json.loads((out / "result.json").read_text())
    assert [s["keep"]["net.1"] for s in result["steps"]] == [154, 92][: len(result["steps"])]
    assert result["schedule"]["q"] == 0.6 and len(result["schedule"]["planned"]) == 2
    assert_one_line_error(run_cli("iterative", *args), "not an empty folder")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--q", "1.5"], "--q"),
        (["--fractions", "0.2,abc"], "--fractions"),
        (["--schedule", "fractions"], "needs --fractions"),
        (["--schedule", "geometric", "--fractions", "0.2"], "--fractions belongs"),
        (["--max-drop", "-1"], "--max-drop"),
    ],
)
def test_cli_refuses_bad_input_with_one_message(mlp_checkpoint, tmp_path, flags, needle):
    args = ["iterative", "--checkpoint", str(mlp_checkpoint), "--out", str(tmp_path / "x"), "--device", "cpu"]
    run = CliRunner().invoke(app, [*args, *flags])
    assert isinstance(run.exception, PruneSearchError), run.output
    assert needle in str(run.exception) and "\n" not in str(run.exception)
    assert not (tmp_path / "x").exists()
