"""Stored model specs never run code: only zoo/tv: names, or the package.module:factory the user names."""

import json
import os
import re
import shutil
import sys
import textwrap

import optuna
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

import prune_search
from prune_search.elastic import load_elastic
from prune_search.elastic.run import make_elastic
from prune_search.errors import PruneSearchError
from prune_search.finalize import FinalizeConfig, finalize_trial
from prune_search.models import ModelSpec, build_model
from prune_search.search import StartOptions, create_or_join, open_study, run_worker
from prune_search.search.config import CONFIG_ATTR
from prune_search.search.study import open_base
from prune_search.search.summary import front_rows
from prune_search.sparse import load_sparse, save_sparse
from prune_search.training import TrainConfig, load_model, train_baseline
from prune_search.training.checkpoint import MODEL, save_checkpoint

FACTORY = "trusty_nets:tiny"
NETS = """
from torch import nn

def tiny(in_channels, num_classes, image_size, width=8):
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )
"""
HUBCONF = """
import pathlib
pathlib.Path({marker!r}).write_text("code ran")

def m(**kwargs):
    import torch
    return torch.nn.Linear(64, 10)
"""


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """A folder holding the user's module ``trusty_nets`` (on sys.path here, on PYTHONPATH for the CLI)."""
    folder = tmp_path_factory.mktemp("nets")
    (folder / "trusty_nets.py").write_text(textwrap.dedent(NETS))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("trusty_nets", None)


@pytest.fixture
def hub(tmp_path):
    """A torch.hub repo whose import writes ``marker``, and the spec that would load it."""
    repo, marker = tmp_path / "hub", tmp_path / "MARKER"
    repo.mkdir()
    (repo / "hubconf.py").write_text(HUBCONF.format(marker=str(marker)))
    options = {"repo_or_dir": str(repo), "model": "m", "source": "local", "trust_repo": True}
    spec = {"name": "torch.hub:load", "in_channels": 1, "num_classes": 10, "image_size": 8, "options": options}
    return spec, marker


@pytest.fixture
def evil_checkpoint(hub, tmp_path):
    """A plain-data checkpoint (loads with weights_only=True) whose spec names torch.hub:load."""
    spec, marker = hub
    path = tmp_path / "evil.pt"
    state = {"weight": torch.zeros(10, 64), "bias": torch.zeros(10)}
    save_checkpoint({"format": MODEL, "model": spec, "data": {"name": "digits"}, "state_dict": state}, path)
    assert torch.load(path, weights_only=True)["model"]["name"] == "torch.hub:load"
    return path, marker


@pytest.fixture(scope="module")
def factory_study(nets, tmp_path_factory):
    """A study of the user's own factory model, trained 2 epochs on digits, with 200 trials."""
    folder = tmp_path_factory.mktemp("trust")
    checkpoint = folder / "tiny.pt"
    train_baseline(TrainConfig(model=FACTORY, epochs=2), checkpoint, progress=False, device="cpu")
    url = f"sqlite:///{folder / 'study.db'}"
    options = StartOptions(model=FACTORY, evaluations=0, checkpoint=checkpoint, population=20, calibration_batches=2)
    handle, created = create_or_join(url, "own", options, device="cpu", progress=False)
    assert created
    run_worker(handle, 200)
    return url, checkpoint


def _env(nets) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(nets), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("command", ["start", "evaluate", "finalize", "sensitivity", "iterative", "sparsify"])
def test_a_checkpoint_naming_torch_hub_runs_no_code(command, evil_checkpoint, factory_study, nets, tmp_path):
    path, marker = evil_checkpoint
    url, _ = factory_study
    args = {
        "start": ["start", "--study", "new", "--storage", f"sqlite:///{tmp_path / 'new.db'}", "--no-progress"],
        "evaluate": ["evaluate"],
        "finalize": ["finalize", "--study", "own", "--storage", url, "--trial", "0", "--out", str(tmp_path / "f")],
        "sensitivity": ["sensitivity", "--out", str(tmp_path / "s"), "--no-progress"],
        "iterative": ["iterative", "--out", str(tmp_path / "i"), "--no-progress"],
        "sparsify": ["sparsify", "--sparsity", "0.5", "--out", str(tmp_path / "p"), "--no-progress"],
    }[command]
    result = run_cli(*args, "--checkpoint", str(path), env=_env(nets))
    assert_one_line_error(result)
    assert not marker.exists()


def test_load_model_refuses_a_stored_factory_the_caller_did_not_name(evil_checkpoint):
    path, marker = evil_checkpoint
    with pytest.raises(PruneSearchError, match=r"checkpoint .*evil\.pt names the model factory 'torch.hub:load'"):
        load_model(path)
    with pytest.raises(PruneSearchError, match=re.escape("trusted_factory='torch.hub:load'")):
        load_model(path, trusted_factory=FACTORY)
    assert not marker.exists()


def test_stored_options_must_be_plain_json(tmp_path):
    spec = {"name": "resnet20", "in_channels": 1, "num_classes": 10, "image_size": 8, "options": {"w": torch.ones(1)}}
    path = tmp_path / "tensor-option.pt"
    save_checkpoint({"format": MODEL, "model": spec, "data": {"name": "digits"}, "state_dict": {}}, path)
    with pytest.raises(PruneSearchError, match=re.escape("not plain data")) as info:
        load_model(path)
    assert "\n" not in str(info.value)
    with pytest.raises(PruneSearchError, match=re.escape("not plain data")):
        ModelSpec.from_dict({**spec, "options": {}, "name": ["torch.hub:load"]})


def test_a_study_row_naming_torch_hub_is_refused_by_joining_workers(factory_study, nets, hub, tmp_path):
    spec, marker = hub
    url, checkpoint = factory_study
    options = StartOptions(model=FACTORY, evaluations=0, checkpoint=checkpoint, population=8, calibration_batches=1)
    handle, _ = create_or_join(url, "edited", options, device="cpu", progress=False)
    run_worker(handle, 8)
    study = optuna.load_study(study_name="edited", storage=url)
    study.set_user_attr(CONFIG_ATTR, {**study.user_attrs[CONFIG_ATTR], "model": spec})
    elsewhere = tmp_path / "worker2"
    elsewhere.mkdir()
    result = run_cli("start", "--study", "edited", "--storage", url, "--trials", "50", "--no-progress", cwd=elsewhere)
    assert_one_line_error(result, "study 'edited' names the model factory 'torch.hub:load'", "--model torch.hub:load")
    number = str(front_rows(handle)[0]["trial"])
    finalize = run_cli(
        "finalize", "--study", "edited", "--storage", url, "--trial", number, "--out", str(tmp_path / "f")
    )
    assert_one_line_error(finalize, "study 'edited' names the model factory 'torch.hub:load'")
    with pytest.raises(PruneSearchError, match=re.escape("the study has torch.hub:load")):
        open_study(url, "edited", model=FACTORY)
    handle = open_study(url, "edited")
    with pytest.raises(PruneSearchError):
        open_base(handle)
    assert not marker.exists()


def test_an_export_edited_to_name_torch_hub_is_refused_by_load_pruned(factory_study, nets, hub, tmp_path):
    spec, marker = hub
    url, _ = factory_study
    handle = open_study(url, "own", model=FACTORY)
    number = front_rows(handle)[0]["trial"]
    out = tmp_path / "export"
    finalize_trial(handle, number, FinalizeConfig(epochs=1), out, artifact_dir=tmp_path / "art", progress=False)
    with pytest.raises(PruneSearchError, match=re.escape("model.json names the model factory 'trusty_nets:tiny'")):
        prune_search.load_pruned(out)
    x = torch.randn(2, 1, 8, 8)
    assert prune_search.load_pruned(out, trusted_factory=FACTORY)(x).shape == (2, 10)
    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    description = json.loads((edited / "model.json").read_text())
    (edited / "model.json").write_text(json.dumps({**description, "model": spec}))
    for trusted in (None, FACTORY):
        with pytest.raises(PruneSearchError, match=re.escape("'torch.hub:load', which would import and run that code")):
            prune_search.load_pruned(edited, trusted_factory=trusted)
    assert not marker.exists()


def test_elastic_and_sparse_files_build_a_stored_factory_only_when_named(factory_study, nets, tmp_path):
    url, _ = factory_study
    handle = open_study(url, "own", model=FACTORY)
    rows = sorted(front_rows(handle), key=lambda row: row["macs"])
    trials = [rows[0]["trial"], rows[-1]["trial"]]
    make_elastic(handle, trials, tmp_path / "elastic", progress=False)
    with pytest.raises(
        PruneSearchError, match=re.escape("elastic checkpoint names the model factory 'trusty_nets:tiny'")
    ):
        load_elastic(tmp_path / "elastic")
    assert len(load_elastic(tmp_path / "elastic", trusted_factory=FACTORY).levels) == len(trials)
    spec = ModelSpec(FACTORY, 1, 10, 8)
    model = build_model(spec, trusted_factory=FACTORY)
    save_sparse(model, spec, [name for name, p in model.named_parameters() if p.dim() > 1], tmp_path / "sparse.pt")
    with pytest.raises(PruneSearchError, match=re.escape("--model trusty_nets:tiny")):
        load_sparse(tmp_path / "sparse.pt")
    assert load_sparse(tmp_path / "sparse.pt", trusted_factory=FACTORY)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.slow
def test_a_users_own_factory_works_from_the_cli_when_named(factory_study, nets, tmp_path):
    url, checkpoint = factory_study
    env = _env(nets)
    refused = run_cli("evaluate", "--checkpoint", str(checkpoint), env=env)
    assert_one_line_error(refused, "names the model factory 'trusty_nets:tiny'", "--model trusty_nets:tiny")
    scored = run_cli("evaluate", "--checkpoint", str(checkpoint), "--model", FACTORY, "--format", "json", env=env)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["samples"] > 0
    joined = run_cli("start", "--study", "own", "--storage", url, "--model", FACTORY, "--trials", "240", env=env)
    assert joined.returncode == 0, joined.stderr
    assert "joined study 'own'" in joined.stdout
    number = str(front_rows(open_study(url, "own"))[0]["trial"])
    out = tmp_path / "cli-export"
    args = ("finalize", "--study", "own", "--storage", url, "--trial", number, "--epochs", "1", "--out", str(out))
    assert_one_line_error(run_cli(*args, "--no-progress", env=env), "--model trusty_nets:tiny")
    done = run_cli(*args, "--model", FACTORY, "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    assert (out / "weights.pt").is_file()
