"""Fine-grained magnitude pruning: exact counts, masks held by SGD, storage sizes, CLI and finalizer."""

import json
import math
import shutil

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from typer.testing import CliRunner

import prune_search
from prune_search.cli import app
from prune_search.errors import PruneSearchError
from prune_search.finalize import choose
from prune_search.models import ModelSpec, build_model
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.sparse import MaskSet, load_sparse, magnitude_mask, magnitude_masks, storage_report, to_csr
from prune_search.training import Recipe, fit, load_model
from prune_search.training.masks import classifier_name, layer_sparsities, parse_sparsity_map, prunable_layers
from prune_search.training.sparse_size import bitmask_nbytes, csr_nbytes

CPU = torch.device("cpu")
EXAMPLE = torch.zeros(2, 1, 8, 8)


def _small_mlp():
    torch.manual_seed(0)
    return build_model(ModelSpec("mlp", 1, 10, 8, {"hidden": [32]}))


def test_exactly_k_entries_are_pruned_even_when_weights_tie():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, -1.0, 0.5]])
    mask = magnitude_mask(w, 0.5)
    assert (~mask).sum() == 4
    assert (~mask).flatten().nonzero().flatten().tolist() == [0, 1, 2, 7]
    flat = torch.ones(10, 10)
    assert (~magnitude_mask(flat, 0.37)).sum() == 37
    assert bool(magnitude_mask(flat, 0.0).all())
    assert magnitude_mask(torch.tensor([[0.1, -0.3]]), 0.9).tolist() == [[False, True]]
    with pytest.raises(PruneSearchError):
        magnitude_mask(flat, 1.0)


def test_the_classifier_stays_dense_unless_asked_and_the_map_overrides(digits):
    model = build_model(ModelSpec("resnet20", 1, 10, 8))
    assert classifier_name(model, EXAMPLE) == "fc"
    sparsities = layer_sparsities(model, "fc", 0.8, parse_sparsity_map("conv1=0.5, layer1.0.conv1=0"))
    assert sparsities["fc"] == 0 and sparsities["conv1"] == 0.5 and sparsities["layer1.0.conv1"] == 0
    assert sparsities["layer3.2.conv2"] == 0.8 and set(sparsities) == set(prunable_layers(model))
    assert "fc.weight" in magnitude_masks(model, EXAMPLE, 0.5, include_classifier=True).masks
    assert "fc.weight" not in magnitude_masks(model, EXAMPLE, 0.5).masks
    with pytest.raises(PruneSearchError, match="no Conv/Linear layer"):
        layer_sparsities(model, "fc", 0.5, {"layer9": 0.5})


def test_pruned_weights_stay_exactly_zero_after_every_sgd_step_with_momentum_and_weight_decay(digits, tmp_path):
    model = _small_mlp()
    masks = magnitude_masks(model, EXAMPLE, 0.7, include_classifier=True)
    masks.apply(model)
    hook = masks.hook(model)
    params = dict(model.named_parameters())
    steps = []

    def after_step(optimizer):
        hook(optimizer)
        for name, mask in masks.masks.items():
            assert bool((params[name][~mask] == 0).all())
            assert bool((optimizer.state[params[name]]["momentum_buffer"][~mask] == 0).all())
        steps.append(1)

    recipe = Recipe(epochs=2, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, seed=0)
    fitted = fit(model, digits, recipe, tmp_path / "s.pt", identity={}, resume=False, device=CPU, progress=False,
                 after_step=after_step)  # fmt: skip
    assert len(steps) == 2 * len(digits.loader("train", 128, drop_last=True))
    for name, mask in masks.masks.items():
        assert bool((fitted.best_state[name][~mask] == 0).all())
        assert bool((fitted.best_state[name][mask] != 0).all())
    control = _small_mlp()
    MaskSet(masks.masks).apply(control)
    optimizer = torch.optim.SGD(control.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = next(iter(digits.loader("train", 128)))
    torch.nn.functional.cross_entropy(control(x), y).backward()
    optimizer.step()
    assert bool((control.net[1].weight[~masks.masks["net.1.weight"]] != 0).any()), "masks are needed at all"


def test_csr_and_bitmask_sizes_equal_a_manual_count():
    torch.manual_seed(0)
    conv = torch.randn(4, 3, 3, 3) * (torch.rand(4, 3, 3, 3) > 0.6)
    nnz = int((conv != 0).sum())
    csr = to_csr(conv)
    assert torch.equal(csr.to_dense(), conv.reshape(4, 27))
    assert csr_nbytes(csr) == 4 * nnz + 4 * nnz + 4 * (4 + 1)
    assert bitmask_nbytes(conv) == 4 * nnz + math.ceil(108 / 8)
    model = _small_mlp()
    masks = magnitude_masks(model, EXAMPLE, 0.75)
    masks.apply(model)
    report = storage_report(model, masks.masks)
    kept = 64 * 32 - round(64 * 32 * 0.75)
    assert report["sparsified_nonzeros"] == kept and report["sparsity"] == 0.75
    dense = 4 * sum(p.numel() for p in model.parameters())
    assert report["dense_bytes"] == dense
    assert report["csr_bytes"] == dense - 4 * 64 * 32 + 8 * kept + 4 * 33
    assert report["bitmask_bytes"] == dense - 4 * 64 * 32 + 4 * kept + 64 * 32 // 8


def test_sparsify_cli_on_resnet20_gives_the_asked_sparsity(digits_checkpoint, tmp_path):
    out = tmp_path / "sparse"
    args = ["sparsify", "--checkpoint", str(digits_checkpoint), "--sparsity", "0.8", "--epochs", "1"]
    done = run_cli(*args, "--out", str(out), "--device", "cpu", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "CSR" in done.stdout
    report = json.loads((out / "report.json").read_text())
    model, _ = load_model(out / "model.pt")
    masks = torch.load(out / "masks.pt", weights_only=True)
    layers = [name for name in prunable_layers(model) if name != "fc"]
    assert sorted(masks) == sorted(f"{name}.weight" for name in layers)
    state = model.state_dict()
    for name, mask in masks.items():
        numel = mask.numel()
        assert int((~mask).sum()) == round(numel * 0.8)
        assert bool((state[name][~mask] == 0).all()) and int(state[name].count_nonzero()) == numel - round(numel * 0.8)
    assert int(state["fc.weight"].count_nonzero()) == state["fc.weight"].numel()
    size = report["size"]
    assert size["sparsified_nonzeros"] == sum(int(m.sum()) for m in masks.values())
    assert size["bitmask_bytes"] < size["csr_bytes"] < size["dense_bytes"]
    assert size["sparse_file_bytes"] == (out / "sparse.pt").stat().st_size < (out / "model.pt").stat().st_size
    assert 0 <= report["val_acc"] <= 1 and 0 <= report["test_acc"] <= 1
    reloaded = load_sparse(out / "sparse.pt").state_dict()
    assert all(torch.equal(reloaded[k], state[k]) for k in state)


@pytest.fixture(scope="module")
def mlp_study(tmp_path_factory, mlp_checkpoint):
    folder = tmp_path_factory.mktemp("sparse-study")
    checkpoint = folder / "mlp.pt"
    shutil.copyfile(mlp_checkpoint, checkpoint)
    url = f"sqlite:///{folder / 'study.db'}"
    options = StartOptions(model="mlp", evaluations=0, checkpoint=checkpoint, population=20, calibration_batches=2)
    handle, _ = create_or_join(url, "sparse", options, device="cpu", progress=False)
    run_worker(handle, 40)
    return handle, url


def test_finalize_with_sparsity_masks_the_pruned_model_and_records_it(mlp_study, tmp_path):
    handle, url = mlp_study
    number = choose(handle, use_knee=True)[0][0]
    out = tmp_path / "fin"
    args = ["finalize", "--study", "sparse", "--storage", url, "--trial", str(number), "--epochs", "1"]
    args += ["--sparsity", "0.5", "--out", str(out), "--artifact-dir", str(tmp_path / "art"), "--device", "cpu"]
    run = CliRunner().invoke(app, [*args, "--no-progress"])
    assert run.exit_code == 0, run.output
    result = json.loads((out / "result.json").read_text())
    model = prune_search.load_pruned(out)
    pruned = [model.net[1].weight, model.net[3].weight]
    expected = sum(w.numel() - round(w.numel() * 0.5) for w in pruned)
    assert sum(int(w.count_nonzero()) for w in pruned) == expected
    assert int(model.net[5].weight.count_nonzero()) == model.net[5].weight.numel()
    sparse = result["sparse"]
    assert sparse["asked"] == 0.5 and sparse["sparsified_nonzeros"] == expected
    assert sparse["bitmask_bytes"] < sparse["dense_bytes"] < sparse["csr_bytes"], "CSR at 50 % costs more than dense"


def test_bad_sparsity_values_are_refused_with_one_line(digits_checkpoint, tmp_path):
    common = ["sparsify", "--checkpoint", str(digits_checkpoint), "--out", str(tmp_path / "x"), "--device", "cpu"]
    assert_one_line_error(run_cli(*common, "--sparsity", "1.0"), "--sparsity", "[0, 1)")
    for flags, needle in [
        (["--sparsity", "-0.1"], "--sparsity must be in [0, 1)"),
        ([], "give --sparsity"),
        (["--sparsity-map", "conv1=abc"], "LAYER=SPARSITY"),
        (["--sparsity-map", "conv1=1.5"], "sparsity of 'conv1'"),
        (["--sparsity-map", "nope=0.5"], "no Conv/Linear layer"),
    ]:
        run = CliRunner().invoke(app, [*common, *flags])
        assert isinstance(run.exception, PruneSearchError), run.output
        assert needle in str(run.exception)
    finalize = ["finalize", "--study", "s", "--storage", "sqlite:///:memory:", "--trial", "0", "--out", str(tmp_path)]
    run = CliRunner().invoke(app, [*finalize, "--sparsity", "1.5"])
    assert isinstance(run.exception, PruneSearchError) and "--sparsity" in str(run.exception)
