import pytest
import torch

from prune_search.data import DataSpec
from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec
from prune_search.training import TrainConfig, load_model, read_checkpoint, train_baseline
from prune_search.training.baseline import state_path
from prune_search.training.loop import evaluate

FAST = TrainConfig(model="resnet20", model_options={"width_mult": 0.5}, epochs=3, batch_size=64, seed=7)


def _train(out, config=FAST, **kwargs):
    return train_baseline(config, out, progress=False, device="cpu", **kwargs)


def test_digits_baseline_learns_and_checkpoint_round_trips(tmp_path, digits):
    config = TrainConfig(model="resnet20", epochs=8, seed=0)
    result = _train(tmp_path / "base.pt", config)
    assert result.test_acc > 0.9
    assert 1 <= result.best_epoch <= 8
    assert result.val_acc == max(r.val_acc for r in result.history)
    assert not state_path(tmp_path / "base.pt").exists()

    raw = torch.load(tmp_path / "base.pt", weights_only=True)
    assert raw["model"]["name"] == "resnet20"
    assert raw["data"]["name"] == "digits"
    assert raw["metrics"]["test_acc"] == result.test_acc

    model, _ = load_model(tmp_path / "base.pt", ModelSpec("resnet20", 1, 10, 8))
    metrics = evaluate(model, digits.loader("test", 512), torch.device("cpu"))
    assert metrics.accuracy == result.test_acc


class _Interrupt(Exception):
    pass


def _stop_after(epoch):
    def callback(record):
        if record.epoch == epoch:
            raise _Interrupt

    return callback


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    straight = _train(tmp_path / "a.pt")
    with pytest.raises(_Interrupt):
        _train(tmp_path / "b.pt", on_epoch_end=_stop_after(2))
    assert state_path(tmp_path / "b.pt").exists()
    assert not (tmp_path / "b.pt").exists()
    resumed = _train(tmp_path / "b.pt", resume=True)
    assert [r.val_loss for r in resumed.history] == [r.val_loss for r in straight.history]
    a = read_checkpoint(tmp_path / "a.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "b.pt")["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test_acc == straight.test_acc


def test_resume_with_a_different_configuration_is_refused_and_keeps_the_state(tmp_path):
    with pytest.raises(_Interrupt):
        _train(tmp_path / "b.pt", on_epoch_end=_stop_after(1))
    before = state_path(tmp_path / "b.pt").read_bytes()
    changed = TrainConfig(**{**FAST.__dict__, "lr": 0.05})
    with pytest.raises(PruneSearchError, match=r"--resume with a different configuration \(lr=0.1"):
        _train(tmp_path / "b.pt", changed, resume=True)
    assert state_path(tmp_path / "b.pt").read_bytes() == before


def test_existing_outputs_are_never_overwritten_silently(tmp_path):
    out = tmp_path / "base.pt"
    out.write_bytes(b"precious")
    with pytest.raises(PruneSearchError, match="--overwrite"):
        _train(out)
    assert out.read_bytes() == b"precious"
    with pytest.raises(PruneSearchError, match="nothing to resume"):
        _train(tmp_path / "fresh.pt", resume=True)


def test_truncated_and_foreign_files_are_not_checkpoints(tmp_path):
    _train(tmp_path / "base.pt", TrainConfig(model="mlp", epochs=1))
    data = (tmp_path / "base.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    for name in ("cut.pt", "text.pt", "other.pt"):
        with pytest.raises(PruneSearchError, match=r"not a (readable )?prune-search checkpoint") as info:
            load_model(tmp_path / name)
        assert "\n" not in str(info.value)
    with pytest.raises(PruneSearchError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_checkpoint_for_another_architecture_or_class_count_is_refused(tmp_path):
    _train(tmp_path / "mlp.pt", TrainConfig(model="mlp", epochs=1))
    with pytest.raises(PruneSearchError, match="architecture mlp"):
        load_model(tmp_path / "mlp.pt", ModelSpec("resnet20", 1, 10, 8))
    with pytest.raises(PruneSearchError, match="10 classes vs 100"):
        load_model(tmp_path / "mlp.pt", ModelSpec("mlp", 1, 100, 8))
    with pytest.raises(PruneSearchError, match="input 1×8px vs 1×28px"):
        load_model(tmp_path / "mlp.pt", ModelSpec("mlp", 1, 10, 28))


def test_bad_hyperparameters_are_refused_before_any_work(tmp_path):
    with pytest.raises(PruneSearchError, match="--epochs must be at least 1"):
        _train(tmp_path / "x.pt", TrainConfig(epochs=0))
    with pytest.raises(PruneSearchError, match="unknown dataset"):
        _train(tmp_path / "x.pt", TrainConfig(data=DataSpec("imagenet")))
    assert not any(tmp_path.iterdir())


def test_cached_baselines_are_kept_apart_by_model_options(tmp_path, monkeypatch):
    from prune_search.training.cache import cached_baseline, cached_path

    monkeypatch.setenv("PRUNE_SEARCH_CACHE", str(tmp_path))
    data = DataSpec("digits")
    narrow = cached_baseline("mlp", data, model_options={"hidden": [32]}, device="cpu", progress=False)
    assert narrow != cached_path("mlp", data) and not cached_path("mlp", data).exists()
    spec = ModelSpec("mlp", 1, 10, 8, {"hidden": [32]})
    model, _ = load_model(narrow, spec)
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [32, 10]
    assert cached_baseline("mlp", data, model_options={"hidden": [32]}, device="cpu", progress=False) == narrow
