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
    result = run_cli("evaluate", "--checkpoint", str(mlp_checkpoint), "--split", "test", "--json")
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
