"""The fast path's numbers are the physically pruned model's numbers, for every zoo family."""

import copy
import json

import pytest
import torch
from model_checks import fully_modelled, pruned_exactly, randomised, reference_cost
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators import (
    AdaptiveBNEvaluator,
    BatchedEvaluator,
    CostModel,
    Importance,
    ProxyEvaluator,
    apply_plan,
    compute_importance,
    materialize,
)
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
        assert reference_cost(pruned, example) == (int(macs[row]), int(params[row])), row
    assert CostModel(space).base() == reference_cost(model, example)
    assert CostModel(space).unmodelled_macs == 0  # every counted MAC in a modelled layer


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


def test_shufflenet_leaves_what_reaches_a_channel_shuffle_whole_and_is_exact():
    spec = ModelSpec("tv:shufflenet_v2_x1_0", 3, 10, 64)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    example = torch.randn(2, 3, 64, 64)
    space = PruningSpace.from_model(model, example)
    assert len(space) == 18  # the stem, each block's inner branch, conv5
    feeding = {name for name, _ in model.named_modules() if name.endswith(("branch1.2", "branch2.5"))}
    assert not {m.module for g in space.groups for m in g.members if m.out} & feeding  # the shuffled outputs
    assert fully_modelled(model, space, example)
    pruned, plan = pruned_exactly(
        model, space, example, CandidateBatch.cat([space.smallest(), space.sample(3, seed=2)])
    )[-1]
    fresh = apply_plan(build_model(spec), PruningPlan.from_json(plan.to_json()))
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(example), pruned.eval()(example))


class _GroupedBlock(nn.Module):
    """A ResNeXt-like bottleneck added to its input: 1×1 conv, 3×3 conv with 4 groups widening 32 to 48, 1×1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 48, 3, padding=1, groups=4), nn.BatchNorm2d(48)
        self.conv3, self.bn3 = nn.Conv2d(48, 16, 1, bias=False), nn.BatchNorm2d(16)

    def forward(self, x):
        y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu())).relu()
        return (x + self.bn3(self.conv3(y))).relu()


class _GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(_GroupedBlock(), _GroupedBlock())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class _GroupNormNet(nn.Module):
    """GroupNorm (4 groups, and 2 on the residual branch) after every convolution, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.norm0 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv1, self.norm1 = nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(4, 32)
        self.conv2, self.norm2 = nn.Conv2d(32, 16, 3, padding=1), nn.GroupNorm(2, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.norm0(self.stem(x)).relu()
        y = self.norm2(self.conv2(self.norm1(self.conv1(x)).relu()))
        return self.head((x + y).relu().mean((2, 3)))


class _ConvNeXtBlock(nn.Module):
    """torchvision's CNBlock: depthwise 7×7 conv, LayerNorm over channels (channels last), MLP, layer scale."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.fc2(nn.functional.gelu(self.fc1(y))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class _ConvNeXtNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, stride=2)
        self.blocks = nn.Sequential(_ConvNeXtBlock(16), _ConvNeXtBlock(16))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x)).mean((2, 3))))


def _candidates(space: PruningSpace, sampled: int) -> CandidateBatch:
    smallest = space.smallest()
    median = CandidateBatch(smallest.keep, torch.ones_like(smallest.keep))
    return CandidateBatch.cat([space.full(), smallest, median, space.sample(sampled, seed=3)])


def _kept_roots(space: PruningSpace, importance: Importance, candidate: CandidateBatch) -> dict[str, Tensor]:
    """Per group, whether each root channel is kept (bool ``[n]``), from the selection function alone."""
    kept = {}
    for g, group in enumerate(space.groups):
        strategy = space.strategies[int(candidate.strategy[0, g])]
        count = int(candidate.keep[0, g])
        mask = torch.zeros(group.size, dtype=torch.bool)
        mask[select_channels(importance.scores[group.name], strategy, count, group.blocks, group.aligned)] = True
        kept[group.name] = mask
    return kept


def _inputs_removed(model: nn.Module, space: PruningSpace, kept: dict[str, Tensor]) -> nn.Module:
    """A copy of ``model`` whose Conv/Linear layers ignore every input channel the candidate removes: in a
    network without LayerNorm/GroupNorm (whose statistics span channels) it computes the pruned model's logits."""
    copy_ = copy.deepcopy(model)
    modules = dict(copy_.named_modules())
    with torch.no_grad():
        for group in space.groups:
            for member in group.members:
                module = modules[member.module]
                if member.out or not isinstance(module, nn.Conv2d | nn.Linear):
                    continue
                removed = torch.tensor(member.idxs)[~kept[group.name][torch.tensor(member.root_idxs)]]
                if isinstance(module, nn.Conv2d) and module.groups > 1:
                    per_in, per_out = module.in_channels // module.groups, module.out_channels // module.groups
                    for channel in removed.tolist():
                        block, position = divmod(channel, per_in)
                        module.weight[block * per_out : (block + 1) * per_out, position] = 0
                else:
                    module.weight[:, removed] = 0
    return copy_


def _assert_exact(model: nn.Module, space: PruningSpace, candidates: CandidateBatch, example: Tensor) -> list:
    """Analytic cost == the materialised model's FlopCounterMode MACs and parameter count; the pruned models."""
    importance = compute_importance(model, space, "l2")
    macs, params = CostModel(space)(candidates)
    assert CostModel(space).base() == reference_cost(model, example)
    assert CostModel(space).unmodelled_macs == 0  # every counted MAC in a modelled layer
    pruned = []
    for row in range(len(candidates)):
        net, _ = materialize(model, space, importance, candidates[row])
        assert reference_cost(net, example) == (int(macs[row]), int(params[row])), row
        pruned.append((net, _kept_roots(space, importance, candidates[row])))
    return pruned


def test_grouped_convolutions_are_exact_and_keep_the_selected_channels_of_every_group():
    torch.manual_seed(0)
    model, example = randomised(_GroupedNet()), torch.randn(2, 3, 32, 32)
    space = PruningSpace.from_model(model, example)
    layout = {g.name: (g.blocks, g.aligned) for g in space.groups}
    assert layout["blocks.0.conv1"] == (4, True) and layout["blocks.0.conv2"] == (4, False)
    candidates = _candidates(space, 8)
    importance = compute_importance(model, space, "l2")
    retained, _ = ProxyEvaluator(space, importance).retained(candidates)
    for row, (net, kept) in enumerate(_assert_exact(model, space, candidates, example[:1])):
        with torch.no_grad():
            assert torch.allclose(net(example), _inputs_removed(model, space, kept)(example), atol=1e-5, rtol=1e-4)
        conv2 = net.blocks[0].conv2
        assert conv2.groups == 4 and conv2.weight.shape[1] * 4 == conv2.in_channels
        by_selection = [float(importance.scores[g.name][kept[g.name]].sum()) for g in space.groups]
        assert torch.allclose(retained[row], torch.tensor(by_selection, dtype=torch.float64))  # the proxy's channels


def test_groupnorm_keeps_its_groups_whole_and_is_exact():
    torch.manual_seed(0)
    model, example = randomised(_GroupNormNet()), torch.randn(2, 3, 32, 32)
    space = PruningSpace.from_model(model, example)
    # the residual group (rooted at conv2) holds GroupNorms of 4 and 2 groups: blocks of 4 channels serve both
    assert {g.name: g.blocks for g in space.groups} == {"conv1": 4, "conv2": 4}
    for net, kept in _assert_exact(model, space, _candidates(space, 8), example[:1]):
        assert kept["conv2"].view(4, -1).sum(1).unique().numel() == 1  # the same count in every block
        for name, original in (("norm0", model.norm0), ("norm2", model.norm2)):
            pruned = getattr(net, name)
            assert pruned.num_groups == original.num_groups
            assert torch.equal(pruned.weight, original.weight[kept["conv2"]])
        with torch.no_grad():
            net(example)


def test_masked_scores_are_refused_on_groupnorm_models_and_batched_scoring_goes_physical():
    torch.manual_seed(0)
    model, example = randomised(_GroupNormNet()).eval(), torch.randn(8, 3, 32, 32)
    space = PruningSpace.from_model(model, example[:2])
    importance = compute_importance(model, space, "l2")
    batches = [(example, torch.arange(8) % 10)]
    with pytest.raises(PruneSearchError, match=r"GroupNorm 'norm0'.*use --proxy taylor_loss"):
        AdaptiveBNEvaluator(model, space, importance, batches, batches)
    with pytest.raises(PruneSearchError, match="use mode 'physical'"):
        BatchedEvaluator(model, space, importance, batches, mode="masked")
    evaluator = BatchedEvaluator(model, space, importance, batches)
    assert evaluator.mode == "physical"
    scores = evaluator(space.full(1))
    assert scores["kl"].abs().max() < 1e-9  # the unpruned candidate is the model itself


def test_a_convnext_block_prunes_its_layernorm_and_layer_scale_exactly():
    torch.manual_seed(0)
    model, example = randomised(_ConvNeXtNet()), torch.randn(2, 3, 32, 32)
    space = PruningSpace.from_model(model, example)
    assert space.names == ["blocks.0.fc1", "blocks.1.fc1", "blocks.1.fc2"]  # the MLPs' hidden widths, the stage
    stage = space.groups[2]
    assert {p.module for p in stage.parameters} == {"blocks.0.layer_scale", "blocks.1.layer_scale"}
    assert {"stem", "blocks.0.dwconv", "blocks.0.norm", "norm", "head"} <= {m.module for m in stage.members}
    for net, kept in _assert_exact(model, space, _candidates(space, 8), example[:1]):
        block, original, channels = net.blocks[0], model.blocks[0], kept["blocks.1.fc2"]
        assert torch.equal(block.layer_scale, original.layer_scale[channels])
        assert torch.equal(block.norm.weight, original.norm.weight[channels])
        assert block.norm.normalized_shape == (int(channels.sum()),)
        assert torch.equal(block.fc1.weight, original.fc1.weight[kept["blocks.0.fc1"]][:, channels])


@pytest.mark.parametrize("net", [_GroupedNet, _GroupNormNet, _ConvNeXtNet])
def test_a_plan_replays_grouped_convolutions_norms_and_layer_scales_on_a_fresh_model(net):
    torch.manual_seed(0)
    model, example = randomised(net()), torch.randn(2, 3, 32, 32)
    space = PruningSpace.from_model(model, example)
    pruned, plan = materialize(model, space, compute_importance(model, space, "l2"), space.sample(1, seed=5))
    fresh = apply_plan(net(), PruningPlan.from_json(plan.to_json()))
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(example), pruned(example))


TORCHVISION = ["tv:resnext50_32x4d", "tv:regnet_y_400mf", "tv:regnet_x_1_6gf", "tv:convnext_tiny"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_grouped_and_layernorm_families_are_exact(name):
    torch.manual_seed(0)
    model = randomised(build_model(ModelSpec(name, 3, 10, 32)))
    example = torch.randn(2, 3, 32, 32)
    space = PruningSpace.from_model(model, example)
    assert any(g.blocks > 1 for g in space.groups) or any(g.parameters for g in space.groups)
    layernorm = any(isinstance(m, nn.LayerNorm) for m in model.modules())
    for net, kept in _assert_exact(model, space, _candidates(space, 3), example[:1]):
        if not layernorm:
            with torch.no_grad():
                expected = _inputs_removed(model, space, kept)(example)
                assert torch.allclose(net(example), expected, atol=1e-4, rtol=1e-3)
