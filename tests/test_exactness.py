"""The fast path's numbers are the physically pruned model's numbers, for every zoo family."""

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, Importance, ProxyEvaluator, apply_plan, compute_importance, materialize
from prune_search.evaluators.materialize import PruningPlan
from prune_search.evaluators.selection import select_channels
from prune_search.models import ModelSpec, build_model
from prune_search.space import CandidateBatch, PruningSpace

MODELS = {
    "resnet20": ModelSpec("resnet20", 1, 10, 8),
    "resnet56": ModelSpec("resnet56", 3, 10, 32),
    "vgg16_bn": ModelSpec("vgg16_bn", 3, 10, 32),
    "mlp": ModelSpec("mlp", 1, 10, 28),
    "tv:resnet18": ModelSpec("tv:resnet18", 3, 10, 32),
    "tv:mobilenet_v2": ModelSpec("tv:mobilenet_v2", 3, 10, 32),
}


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    spec = MODELS[request.param]
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong channel shows in the logits
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    example = torch.randn(2, spec.in_channels, spec.image_size, spec.image_size)
    space = PruningSpace.from_model(model, example, round_to=2 if request.param == "resnet56" else 1)
    importance = compute_importance(model, space, "l2")
    sampled = space.sample(20, seed=1)
    strategies = sampled.strategy.clone()
    strategies[:10] = torch.arange(10)[:, None] % 2  # rows of all-min and all-median
    candidates = CandidateBatch.cat(
        [
            space.full(),
            space.smallest(),
            CandidateBatch(space.smallest().keep, torch.ones_like(space.smallest().keep)),
            CandidateBatch(sampled.keep, strategies),
        ]
    )
    return spec, model, space, importance, candidates, example[:1]


def _reference_cost(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(example)
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def _kept_indices(space, importance, candidate, model):
    """Per module: kept out and in indices, from the selection function alone."""
    modules = dict(model.named_modules())
    kept = {}
    for g, group in enumerate(space.groups):
        strategy = space.strategies[int(candidate.strategy[0, g])]
        roots = set(select_channels(importance.scores[group.name], strategy, int(candidate.keep[0, g])).tolist())
        for member in group.members:
            side = "out" if member.out else "in"
            removed = {i for i, r in zip(member.idxs, member.root_idxs, strict=True) if r not in roots}
            kept.setdefault((member.module, side), set()).update(removed)
    result = {}
    for (name, side), removed in kept.items():
        module = modules[name]
        width = module.weight.shape[0 if side == "out" else 1] if module.weight.dim() > 1 else module.weight.shape[0]
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            width = module.out_channels
        result[(name, side)] = torch.tensor(sorted(set(range(width)) - removed))
    return result


def _assert_same_channels(original: nn.Module, pruned: nn.Module, kept: dict) -> None:
    pruned_modules = dict(pruned.named_modules())
    for name, module in original.named_modules():
        if not isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            continue
        weight = module.weight.detach()
        out_idx = kept.get((name, "out"), torch.arange(weight.shape[0]))
        expected = weight[out_idx]
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1
        if weight.dim() > 1 and not depthwise:
            expected = expected[:, kept.get((name, "in"), torch.arange(weight.shape[1]))]
        assert torch.equal(pruned_modules[name].weight.detach(), expected), name
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(pruned_modules[name].running_mean, module.running_mean[out_idx]), name


def test_analytic_cost_equals_the_pruned_models_count(case):
    _, model, space, importance, candidates, example = case
    macs, params = CostModel(space)(candidates)
    for row in range(len(candidates)):
        pruned, _ = materialize(model, space, importance, candidates[row])
        assert _reference_cost(pruned, example) == (int(macs[row]), int(params[row])), row
    assert CostModel(space).base() == _reference_cost(model, example)


def test_materialized_model_keeps_exactly_the_selected_channels(case):
    _, model, space, importance, candidates, _ = case
    for row in (0, 1, 2, 3, 4, 10, 15):
        pruned, plan = materialize(model, space, importance, candidates[row])
        _assert_same_channels(model, pruned, _kept_indices(space, importance, candidates[row], model))
        for g, group in enumerate(space.groups):
            assert len(plan.kept[group.name]) == int(candidates.keep[row, g])


def test_plan_rebuilds_a_fresh_model_with_identical_logits(case, tmp_path):
    spec, model, space, importance, candidates, example = case
    for row in (1, 5, 6):
        pruned, plan = materialize(model, space, importance, candidates[row])
        (tmp_path / "plan.json").write_text(plan.to_json())
        torch.save(pruned.state_dict(), tmp_path / "weights.pt")
        fresh = apply_plan(build_model(spec), PruningPlan.from_json((tmp_path / "plan.json").read_text()))
        fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
        fresh.eval()
        pruned.eval()
        with torch.no_grad():
            assert torch.equal(fresh(example), pruned(example))
        assert json.loads(plan.to_json())["format"] == "prune-search/plan"


def test_no_group_ever_reaches_zero_channels(case):
    _, _, space, importance, candidates, _ = case
    assert bool((candidates.keep >= 1).all())
    assert bool((space.floor() >= 1).all())
    proxy = ProxyEvaluator(space, importance)
    losses = proxy(candidates)
    assert float(losses[0]) == 0.0
    assert bool((losses[1:] > 0).all())


def test_importance_json_round_trip_keeps_scores(case):
    _, _, space, importance, candidates, _ = case
    again = Importance.from_json(importance.to_json())
    proxy = ProxyEvaluator(space, importance)
    assert torch.equal(ProxyEvaluator(space, again)(candidates), proxy(candidates))
    assert torch.equal(
        CostModel(PruningSpace.from_json(space.to_json()))(candidates)[0], CostModel(space)(candidates)[0]
    )


def test_shufflenet_names_its_channel_shuffle_layers_and_is_exact_with_them_ignored():
    spec = ModelSpec("tv:shufflenet_v2_x1_0", 3, 10, 64)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    example = torch.randn(2, 3, 64, 64)
    with pytest.raises(PruneSearchError) as info:
        PruningSpace.from_model(model, example)
    message = str(info.value)
    assert message.startswith("layer 'stage2.0.branch1.2' feeds a channel shuffle")
    assert "\n" not in message
    named = message.split("pass --ignore-layers ")[1].split(" ")[0].split(",")
    feeding = [name for name, _ in model.named_modules() if name.endswith(("branch1.2", "branch2.5"))]
    assert set(feeding) <= set(named)  # every block's output convs (the concatenation the shuffle permutes)

    space = PruningSpace.from_model(model, example, ignored_layers=named)
    assert len(space) == 18  # the stem, each block's inner branch, conv5
    importance = compute_importance(model, space, "l2")
    candidates = CandidateBatch.cat([space.smallest(), space.sample(3, seed=2)])
    macs, params = CostModel(space)(candidates)
    assert CostModel(space).base() == _reference_cost(model, example[:1])
    for row in range(len(candidates)):
        pruned, plan = materialize(model, space, importance, candidates[row])
        assert _reference_cost(pruned, example[:1]) == (int(macs[row]), int(params[row])), row
    fresh = apply_plan(build_model(spec), PruningPlan.from_json(plan.to_json()))
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(example), pruned.eval()(example))
