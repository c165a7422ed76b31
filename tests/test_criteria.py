"""Importance criteria beyond Taylor: greedy L1, FPGM, per-sample OBD/Fisher, interval adjoint."""

import optuna
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import assert_one_line_error, run_cli
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators import compute_importance, materialize, select_channels
from prune_search.evaluators.criteria_fpgm import distance_sums
from prune_search.evaluators.criteria_interval import input_box, interval_sweep
from prune_search.models import ModelSpec, build_model
from prune_search.search import StartOptions, create_or_join, open_study, run_worker
from prune_search.space import CandidateBatch, PruningSpace
from prune_search.training import load_model


def _set(layer: nn.Module, weight: list, bias: list | None = None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32).view_as(layer.weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))


# --- l1_greedy ---------------------------------------------------------------------------------


def _two_conv_net() -> tuple[nn.Module, PruningSpace]:
    """conv "0" (1→4, 1×1) → ReLU → conv "2" (4→3, 1×1) → ReLU → pool → fc "6": two groups."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 1, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 3, 1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    )
    _set(model[0], [1.0, -2.0, 3.0, -4.0])  # L1 1, 2, 3, 4: at 50 % channels 0 and 1 go
    _set(model[2], [[5, -5, 0, 0], [0, 0, 1, -1], [1, 1, -1, 2]])
    space = PruningSpace.from_model(model.eval(), torch.randn(2, 1, 3, 3))
    assert space.names == ["0", "2"]
    return model, space


def test_l1_greedy_skips_the_kernels_of_channels_the_earlier_group_prunes():
    model, space = _two_conv_net()
    independent = compute_importance(model, space, "l1").scores
    greedy = compute_importance(model, space, "l1_greedy").scores  # reference ratio 0.5
    assert greedy["0"].tolist() == independent["0"].tolist() == [1, 2, 3, 4]
    assert independent["2"].tolist() == [10, 2, 5]  # every input kernel
    assert greedy["2"].tolist() == [0, 2, 3]  # only inputs 2 and 3 survive conv "0" at 50 %
    assert select_channels(independent["2"], "min", 2).tolist() == [0, 2]
    assert select_channels(greedy["2"], "min", 2).tolist() == [1, 2]
    at_75 = compute_importance(model, space, "l1_greedy", reference_ratio=0.75).scores
    assert at_75["2"].tolist() == [5, 2, 4]  # keep 3 of 4: only input 0 goes
    unpruned = compute_importance(model, space, "l1_greedy", reference_ratio=1.0).scores
    assert unpruned["2"].tolist() == independent["2"].tolist()
    with pytest.raises(PruneSearchError, match=r"reference ratio must be in \(0, 1\], got 0"):
        compute_importance(model, space, "l1_greedy", reference_ratio=0.0)


# --- fpgm --------------------------------------------------------------------------------------


def test_fpgm_ranks_duplicate_filters_lowest_and_prunes_other_channels_than_l1():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    _set(model[1], [[3, 3], [3, 3], [0.1, 0]], [0, 0, 0])
    space = PruningSpace.from_model(model.eval(), torch.randn(2, 1, 1, 2))
    fpgm = compute_importance(model, space, "fpgm")
    l1 = compute_importance(model, space, "l1")
    gap = ((3 - 0.1) ** 2 + 3**2) ** 0.5
    assert fpgm.scores["1"].tolist() == pytest.approx([gap, gap, 2 * gap], rel=1e-6)
    assert l1.scores["1"].tolist() == pytest.approx([6, 6, 0.1])
    keep_one_of_each = CandidateBatch(torch.tensor([[2]]), torch.tensor([[0]]))
    assert materialize(model, space, fpgm, keep_one_of_each)[1].kept["1"] == [0, 2]  # a duplicate goes
    assert materialize(model, space, l1, keep_one_of_each)[1].kept["1"] == [0, 1]  # the distinct one goes


def test_fpgm_sums_every_output_layer_of_a_residual_group():
    model = build_model(ModelSpec("resnet20", 1, 10, 8)).eval()
    space = PruningSpace.from_model(model, torch.randn(2, 1, 8, 8))
    stem = space.groups[0]
    modules = dict(model.named_modules())
    convs = [m.module for m in stem.members if m.out and isinstance(modules[m.module], nn.Conv2d)]
    assert len(convs) == 4  # the stem and the last conv of each stage-1 block
    expected = sum(distance_sums(modules[name].weight) for name in convs)
    assert torch.allclose(compute_importance(model, space, "fpgm").scores[stem.name], expected)


# --- hessian -----------------------------------------------------------------------------------


def _tiny_mlp() -> tuple[nn.Module, PruningSpace, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    space = PruningSpace.from_model(model, torch.randn(2, 1, 2, 2))
    inputs, targets = torch.randn(12, 1, 2, 2), torch.randint(3, (12,))
    return model, space, inputs, targets


def _per_sample_gate_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """∂ℓ_n/∂s_c for the hidden units, one sample at a time: h_c · ∂ℓ_n/∂h_c, float64 [N, 5]."""
    rows = []
    for x, y in zip(inputs, targets, strict=True):
        hidden = model[2](model[1](model[0](x[None]))).detach().requires_grad_(True)
        loss = F.cross_entropy(model[3](hidden), y[None])
        (grad,) = torch.autograd.grad(loss, hidden)
        rows.append((hidden * grad)[0].to(torch.float64))
    return torch.stack(rows)


def test_hessian_accumulates_squared_gradients_per_sample_not_the_square_of_the_batch_mean():
    model, space, inputs, targets = _tiny_mlp()
    gradients = _per_sample_gate_gradients(model, inputs, targets)
    brute_force = 0.5 * gradients.square().mean(0)
    batch_mean_squared = 0.5 * gradients.mean(0).square()
    for batch in (12, 5, 1):
        batches = list(zip(inputs.split(batch), targets.split(batch), strict=True))
        scores = compute_importance(model, space, "hessian", batches=batches, max_batches=20).scores["1"]
        assert torch.allclose(scores, brute_force, rtol=1e-5, atol=1e-12)
    assert not torch.allclose(brute_force, batch_mean_squared, rtol=0.1)
    assert bool((brute_force >= batch_mean_squared).all())


def test_hessian_on_a_batchnorm_resnet_does_not_depend_on_how_samples_are_batched(digits):
    model = build_model(ModelSpec("resnet20", 1, 10, 8, {"width_mult": 0.5})).eval()
    space = PruningSpace.from_model(model, torch.randn(2, 1, 8, 8))
    inputs, targets = next(iter(digits.loader("train", 4)))
    together = compute_importance(model, space, "hessian", batches=[(inputs, targets)])
    single = list(zip(inputs.split(1), targets.split(1), strict=True))
    one_by_one = compute_importance(model, space, "hessian", batches=single, max_batches=4)
    for name in space.names:
        assert torch.allclose(together.scores[name], one_by_one.scores[name], rtol=1e-4, atol=1e-12)
    with pytest.raises(PruneSearchError, match="criterion 'hessian' needs calibration batches"):
        compute_importance(model, space, "hessian")


# --- interval_adjoint --------------------------------------------------------------------------


def _hand_mlp() -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).eval()
    _set(model[0], [[1, -2], [0.5, 1]], [0, -2])
    _set(model[2], [[1, 1], [-1, 3]], [0, 0])
    return model


def test_interval_adjoint_matches_a_hand_computation():
    """Box x ∈ [0, 1] × [−1, 1]. Unit 0: z ∈ [−2, 3] (width 5), ReLU straddles 0, outgoing
    weights (1, −1): adjoint [−2, 2] → S = 10. Unit 1: z ∈ [−3, −0.5], always off → S = 0."""
    model = _hand_mlp()
    samples = torch.tensor([[0.0, 1.0], [1.0, -1.0], [0.5, 0.0]])
    lower, upper = input_box([(samples, torch.zeros(3, dtype=torch.int64))])
    assert lower.tolist() == [0, -1] and upper.tolist() == [1, 1]
    sweep = interval_sweep(model, lower, upper)
    assert [v.tolist() for v in sweep.pre["0"]] == [[-2, -3], [3, -0.5]]
    assert [v.tolist() for v in sweep.adjoint["0"]] == [[-2, 0], [2, 0]]
    assert sweep.significance()["0"].tolist() == [10, 0]
    space = PruningSpace.from_model(model, samples)
    importance = compute_importance(model, space, "interval_adjoint", batches=[(samples, torch.zeros(3))])
    assert importance.scores["0"].tolist() == [10, 0]
    seed_001 = interval_sweep(model, lower, upper, seed_lower=1.0, seed_upper=1.0)  # Σ logits
    assert seed_001.significance()["0"].tolist() == [0, 0]  # blind to the unit that separates the classes


def test_interval_bounds_contain_every_train_sample_as_the_model_sees_it(mlp_checkpoint, digits):
    model, _ = load_model(mlp_checkpoint)
    model.eval()
    loader = digits.loader("train", 256)
    sweep = interval_sweep(model, *input_box(loader))
    seen = {}
    hooks = [
        model.net[i].register_forward_hook(lambda m, _, out, i=i: seen.setdefault(i, []).append(out.detach()))
        for i in (1, 3, 5)
    ]
    with torch.no_grad():
        for inputs, _ in loader:
            model(inputs)
    for hook in hooks:
        hook.remove()
    for i in (1, 3, 5):
        z = torch.cat(seen[i]).to(torch.float64)
        lo, hi = sweep.pre[f"net.{i}"]
        assert bool((z >= lo - 1e-4).all()) and bool((z <= hi + 1e-4).all())
        assert float(z.amin()) < -0.1 or float(z.amax()) > 0.1  # the check is not vacuous


def test_interval_adjoint_refuses_conv_and_non_chain_models_in_one_line(digits):
    resnet = build_model(ModelSpec("resnet20", 1, 10, 8)).eval()
    space = PruningSpace.from_model(resnet, torch.randn(2, 1, 8, 8))
    with pytest.raises(PruneSearchError) as error:
        compute_importance(resnet, space, "interval_adjoint", batches=digits.loader("train", 64), max_batches=1)
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        "interval_adjoint supports fully-connected networks (Linear/ReLU); use another criterion for "
        "CifarResNet (layer 'conv1' is Conv2d)"
    )

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(2, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.sigmoid(self.fc1(x)))

    gated = Gated().eval()
    samples = torch.randn(4, 2)
    with pytest.raises(PruneSearchError, match="layer 'fc2' does not take the previous layer's output"):
        compute_importance(
            gated, PruningSpace.from_model(gated, samples), "interval_adjoint", batches=[(samples, torch.zeros(4))]
        )


# --- the CLI -----------------------------------------------------------------------------------


def test_unknown_criterion_is_refused_before_any_work(tmp_path):
    result = run_cli("start", "--study", "s", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--criterion", "snip")
    assert_one_line_error(result, "unknown criterion 'snip'", "l1_greedy", "fpgm", "hessian", "interval_adjoint")


def test_start_searches_with_interval_adjoint_on_an_mlp(mlp_checkpoint, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_cli(
        "start", "--study", "s", "--storage", url, "--model", "mlp", "--checkpoint", str(mlp_checkpoint),
        "--criterion", "interval_adjoint", "--trials", "200", "--population", "20", "--calibration-batches", "2",
        "--evaluations", "0", "--device", "cpu", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    handle = open_study(url, "s")
    assert handle.config["criterion"] == handle.importance.criterion == "interval_adjoint"
    assert not handle.importance.dead
    trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert len(trials) == 200 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_a_study_stores_the_criterion_it_was_created_with(mlp_checkpoint, digits, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    options = StartOptions(model="mlp", evaluations=0, checkpoint=mlp_checkpoint, criterion="fpgm", population=20)
    handle, created = create_or_join(url, "f", options, device="cpu", progress=False)
    assert created and run_worker(handle, 200) == 200
    model, _ = load_model(mlp_checkpoint)
    expected = compute_importance(model.eval(), handle.space, "fpgm")
    again = open_study(url, "f").importance
    assert again.criterion == "fpgm"
    assert all(torch.allclose(again.scores[name], expected.scores[name]) for name in handle.space.names)
