import json

import pytest
from cli_helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "mlp.pt"
    result = run_cli("train", "--model", "mlp", "--epochs", "2", "--out", str(out), "--no-progress", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "test acc" in result.stdout
    assert "epoch   2" in result.stderr
    return out


def test_train_then_evaluate_reports_the_stored_test_accuracy(mlp_checkpoint):
    import torch

    stored = torch.load(mlp_checkpoint, weights_only=True)["metrics"]["test_acc"]
    result = run_cli("evaluate", "--checkpoint", str(mlp_checkpoint), "--split", "test", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] == stored


def test_models_and_datasets_are_listed():
    assert "resnet56" in run_cli("models").stdout
    assert "fashion-mnist" in run_cli("datasets").stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["train", "--model", "resnet2", "--out", "x.pt"], ["unknown model 'resnet2'", "resnet20"]),
        (["train", "--dataset", "cifar", "--out", "x.pt"], ["unknown dataset 'cifar'", "cifar10"]),
        (["train", "--dataset", "fashion-mnist", "--data-root", ".", "--out", "x.pt"], ["dataset-fashion-mnist"]),
        (["train", "--model-option", "head", "--out", "x.pt"], ["KEY=VALUE"]),
        (["train", "--resume", "--out", "x.pt"], ["nothing to resume"]),
    ],
)
def test_bad_train_input_gets_one_line(tmp_path, args, needles):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), *needles)
    assert not (tmp_path / "x.pt").exists()


def test_evaluate_refuses_a_checkpoint_for_another_architecture(mlp_checkpoint):
    assert_one_line_error(
        run_cli("evaluate", "--checkpoint", str(mlp_checkpoint), "--model", "resnet20"), "architecture mlp"
    )


def test_evaluate_refuses_a_truncated_checkpoint(tmp_path, mlp_checkpoint):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(mlp_checkpoint.read_bytes()[:1000])
    assert_one_line_error(run_cli("evaluate", "--checkpoint", str(cut)), "not a readable prune-search checkpoint")


@pytest.mark.slow
def test_resume_with_other_flags_is_one_line_and_keeps_the_run(tmp_path):
    from prune_search.training import TrainConfig, train_baseline

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_baseline(TrainConfig(model="mlp", epochs=3), tmp_path / "r.pt", progress=False, on_epoch_end=interrupt)
    state = (tmp_path / "r.state.pt").read_bytes()
    args = ["train", "--model", "mlp", "--out", "r.pt", "--resume", "--no-progress"]
    assert_one_line_error(run_cli(*args, "--epochs", "4", cwd=tmp_path), "different configuration", "epochs=3")
    assert (tmp_path / "r.state.pt").read_bytes() == state
    resumed = run_cli(*args, "--epochs", "3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch   2" in resumed.stderr
    assert "epoch   1 " not in resumed.stderr


def _help_lines(command: str) -> dict[str, str]:
    """``prune-search COMMAND --help`` on a wide terminal (one line per option), each option's line by its flag."""
    shown = run_cli(command, "--help", env={"COLUMNS": "1000", "TERMINAL_WIDTH": "1000"})
    assert shown.returncode == 0, shown.stderr
    lines = {}
    for line in shown.stdout.splitlines():
        words = line.strip("│ ").split()
        if words and words[0].startswith("--"):
            lines[words[0]] = line
    return lines


def _defaults_shown() -> list[tuple[str, str, list[object]]]:
    """(command, flag, values its help must show), every value read from where the default is defined."""
    from prune_search.evidence.proxy_validation import ValidationConfig
    from prune_search.finalize.rerank import CALIBRATION_BATCHES, RERANKED, SWITCH_MARGIN, TRAINED_RUNGS, VAL_BATCHES
    from prune_search.finalize.tune import FinalizeConfig
    from prune_search.iterative.loop import IterativeConfig
    from prune_search.search.config import DEFAULTS
    from prune_search.space import SpaceOptions

    tuning, space = FinalizeConfig(), SpaceOptions()
    return [
        ("start", "--calibration-batches", [DEFAULTS["calibration_batches"]]),
        ("start", "--population", [DEFAULTS["population"]]),
        ("start", "--criterion", [DEFAULTS["criterion"]]),
        ("start", "--ratio-step", [space.ratio_step]),
        ("start", "--min-ratio", [space.min_ratio]),
        ("sensitivity", "--min-keep", [space.min_keep]),
        ("finalize", "--epochs", [tuning.epochs]),
        ("finalize", "--kd-temperature", [tuning.temperature]),
        ("finalize", "--pick", [RERANKED, CALIBRATION_BATCHES, VAL_BATCHES, *TRAINED_RUNGS]),
        ("finalize", "--margin", [SWITCH_MARGIN]),
        ("compare", "--lr", [tuning.lr]),
        ("validate-proxy", "--bn-batches", [ValidationConfig().bn_batches]),
        ("iterative", "--max-drop", [IterativeConfig().max_drop]),
    ]


@pytest.mark.parametrize("command", sorted({command for command, _, _ in _defaults_shown()}))
def test_help_shows_the_defaults_where_they_are_defined(command):
    lines = _help_lines(command)
    for name, flag, values in _defaults_shown():
        if name != command:
            continue
        assert flag in lines, f"{command} --help has no {flag}"
        line = lines[flag]
        if len(values) == 1:
            assert f"default {values[0]}" in line or f"[default: {values[0]}]" in line, line
        else:
            assert all(f" {value} " in line for value in values), line


def test_one_output_switch_prints_json_and_csv():
    assert json.loads(run_cli("models", "--format", "json").stdout)[0] == "resnet20"
    assert run_cli("datasets", "--format", "csv").stdout.splitlines()[:2] == ["dataset", "digits"]
    assert_one_line_error(run_cli("models", "--format", "yaml"), "--format must be table, json or csv")


@pytest.mark.parametrize(
    "args",
    [["report", "--study", "demo", "--out", "missing/r.html"], ["train", "--model", "mlp", "--out", "missing/x.pt"]],
)
def test_a_file_output_in_a_missing_folder_is_one_line_and_creates_nothing(tmp_path, args):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), "missing", "does not exist; create it first")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["report", "--study", "demo"], ["train", "--model", "mlp"]])
def test_a_file_output_naming_a_folder_is_one_line_and_writes_nothing(tmp_path, command):
    (tmp_path / "out").mkdir()
    assert_one_line_error(run_cli(*command, "--out", "out", cwd=tmp_path), "--out out is a folder")
    assert [p.name for p in tmp_path.rglob("*")] == ["out"]


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("report", "its folder must exist"),
        ("train", "its folder must exist"),
        *[
            (command, "created if missing")
            for command in ("finalize", "iterative", "elastic", "compare", "validate-proxy", "sparsify", "sensitivity")
        ],
    ],
)
def test_every_output_option_says_whether_it_creates_its_folder(command, says):
    from prune_search.cli.app import load_command

    out = next(option for option in load_command(command).params if "--out" in option.opts)
    assert says in out.help
