import copy

import pytest
import torch
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators import (
    CRITERIA,
    AdaptiveBNEvaluator,
    CostModel,
    ProxyEvaluator,
    compute_importance,
    keep_order,
    materialize,
    recalibrate_bn,
    select_channels,
)
from prune_search.evaluators import adaptive_bn as adaptive_bn_module
from prune_search.evaluators.adaptive_bn import accuracy
from prune_search.evaluators.importance import sanitize
from prune_search.models import ModelSpec, build_model
from prune_search.space import CandidateBatch, PruningSpace
from prune_search.training import load_model


@pytest.fixture(scope="module")
def trained(resnet20_checkpoint):
    """A resnet20 trained briefly on digits and its space."""
    model, _ = load_model(resnet20_checkpoint)
    space = PruningSpace.from_model(model.eval(), torch.randn(2, 1, 8, 8))
    return model, space


@pytest.fixture(scope="module")
def taylor(trained, digits):
    model, space = trained
    return compute_importance(model, space, "taylor", batches=digits.loader("train", 128), max_batches=4)


def test_min_keeps_the_most_important_channels():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    assert keep_order(scores, "min").tolist() == [2, 4, 0, 3, 1]
    assert select_channels(scores, "min", 2).tolist() == [2, 4]


def test_median_prunes_the_ranks_nearest_the_median_and_keeps_both_tails():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])  # ascending ranks: 1,5,3,0,4,2 → 0.1 .. 0.9
    assert select_channels(scores, "median", 2).tolist() == [1, 2]  # the weakest and the strongest
    assert select_channels(scores, "median", 4).tolist() == [1, 2, 4, 5]
    assert select_channels(scores, "median", 6).tolist() == list(range(6))


def test_selection_breaks_ties_by_channel_order_and_rejects_bad_counts():
    flat = torch.zeros(6)
    assert select_channels(flat, "min", 3).tolist() == [0, 1, 2]
    with pytest.raises(PruneSearchError, match=r"outside 1\.\.6"):
        select_channels(flat, "min", 0)
    with pytest.raises(PruneSearchError, match="unknown strategy"):
        keep_order(flat, "max")


def test_a_blocked_group_keeps_the_same_count_or_the_same_positions_in_every_block():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.2, 0.8, 0.1, 0.7])  # two blocks of 4 (a GroupNorm's or conv's groups)
    assert select_channels(scores, "min", 4, blocks=2).tolist() == [0, 2, 5, 7]  # each block's best two
    assert select_channels(scores, "min", 2, blocks=2).tolist() == [0, 5]
    assert select_channels(scores, "median", 4, blocks=2).tolist() == [0, 1, 5, 6]  # each block's tails
    # aligned (a grouped conv's inputs): positions ranked by their summed scores 1.1, 0.9, 0.6, 1.0
    assert select_channels(scores, "min", 4, blocks=2, aligned=True).tolist() == [0, 3, 4, 7]
    assert keep_order(scores, "min", blocks=2, aligned=True).tolist() == [0, 4, 3, 7, 1, 5, 2, 6]
    with pytest.raises(PruneSearchError, match="keep count 3 is not a multiple of the group's 2 channel blocks"):
        select_channels(scores, "min", 3, blocks=2)


def test_taylor_is_deterministic_and_leaves_the_model_untouched(trained, taylor, digits):
    model, space = trained
    before = copy.deepcopy(model.state_dict())
    again = compute_importance(model, space, "taylor", batches=digits.loader("train", 128), max_batches=4)
    assert all(torch.equal(taylor.scores[k], again.scores[k]) for k in taylor.scores)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not taylor.dead
    assert all(bool((v >= 0).all()) and float(v.sum()) > 0 for v in taylor.scores.values())


def test_taylor_estimate_tracks_the_real_loss_of_removing_a_channel(trained, taylor, digits):
    """Removing the channel Taylor ranks least important hurts less than removing the top one."""
    model, space = trained
    batches = list(digits.loader("train", 256))[:2]
    group = space.groups[0]
    order = keep_order(taylor.scores[group.name], "min")

    def loss_without(channel: int) -> float:
        pruned_model = copy.deepcopy(model).eval()
        modules = dict(pruned_model.named_modules())
        with torch.no_grad():  # every producer of the channel outputs 0: the channel is gone
            for member in group.members:
                if member.out and isinstance(modules[member.module], nn.BatchNorm2d):
                    modules[member.module].weight[channel] = 0
                    modules[member.module].bias[channel] = 0
        with torch.no_grad():
            return sum(float(nn.functional.cross_entropy(pruned_model(x), y)) for x, y in batches)

    assert loss_without(int(order[-1])) < loss_without(int(order[0]))


@pytest.mark.parametrize("criterion", sorted(set(CRITERIA) - {"interval_adjoint"}))  # FC only: test_criteria.py
def test_every_criterion_gives_one_finite_vector_per_group(trained, digits, criterion):
    model, space = trained
    importance = compute_importance(model, space, criterion, batches=digits.loader("train", 128), max_batches=2)
    assert [importance.scores[g.name].shape[0] for g in space.groups] == space.sizes.tolist()
    assert all(bool(torch.isfinite(v).all()) for v in importance.scores.values())


def test_unknown_criterion_and_missing_data_are_refused(trained):
    model, space = trained
    with pytest.raises(
        PruneSearchError,
        match="criteria are taylor, l1, l1_greedy, l2, fpgm, hessian, bn_scale, interval_adjoint, random",
    ):
        compute_importance(model, space, "snip")
    with pytest.raises(PruneSearchError, match="needs calibration batches"):
        compute_importance(model, space, "taylor")


def test_bn_scale_on_a_model_without_batchnorm_says_so():
    model = build_model(ModelSpec("mlp", 1, 10, 8))
    space = PruningSpace.from_model(model, torch.randn(1, 1, 8, 8))
    with pytest.raises(PruneSearchError, match="bn_scale needs an affine BatchNorm"):
        compute_importance(model, space, "bn_scale")


def test_dead_or_nan_importance_is_reported_and_everything_still_works(trained):
    model, space = trained
    raw = {g.name: torch.rand(g.size, dtype=torch.float64) for g in space.groups}
    raw[space.names[0]] = torch.zeros(space.groups[0].size, dtype=torch.float64)
    raw[space.names[1]] = torch.full((space.groups[1].size,), float("nan"), dtype=torch.float64)
    raw[space.names[2]][3] = float("inf")
    importance = sanitize("l1", raw)
    assert importance.dead == space.names[:3]
    candidates = space.sample(10, seed=0)
    for proxy in ("taylor_loss", "retained_fraction"):
        assert bool(torch.isfinite(ProxyEvaluator(space, importance)(candidates, proxy)).all())
    first = CandidateBatch(candidates.keep[:1], torch.zeros_like(candidates.strategy[:1]))
    _, plan = materialize(model, space, importance, first)
    assert plan.kept[space.names[0]] == list(range(int(first.keep[0, 0])))


def test_zeroed_layer_is_a_dead_group_under_magnitude_criteria():
    model = build_model(ModelSpec("mlp", 1, 10, 8))
    with torch.no_grad():
        model.net[1].weight.zero_()
    space = PruningSpace.from_model(model, torch.randn(1, 1, 8, 8))
    assert compute_importance(model, space, "l1").dead == ["net.1"]


def test_proxy_grows_as_channels_are_removed_and_knows_its_names(trained, taylor):
    _, space = trained
    proxy = ProxyEvaluator(space, taylor)
    levels = [space.keep_counts(torch.full((1, len(space)), r, dtype=torch.float64)) for r in (1.0, 0.75, 0.5, 0.25)]
    batch = CandidateBatch(torch.cat(levels), torch.zeros(4, len(space), dtype=torch.int64))
    for name in ("taylor_loss", "retained_fraction"):
        values = proxy(batch, name).tolist()
        assert values[0] == 0.0
        assert values == sorted(values)
    with pytest.raises(PruneSearchError, match="proxies are taylor_loss, retained_fraction"):
        proxy(batch, "zen")


def test_cost_grows_with_width(trained):
    _, space = trained
    cost = CostModel(space)
    macs, params = cost(CandidateBatch.cat([space.smallest(), space.sample(4, seed=0), space.full()]))
    assert bool((macs[0] <= macs).all()) and bool((macs[-1] >= macs).all())
    assert bool((params[0] <= params).all()) and bool((params[-1] >= params).all())
    assert cost.base() == (int(macs[-1]), int(params[-1]))


def test_adaptive_bn_equals_the_recalibrated_materialized_model(trained, taylor, digits, monkeypatch):
    model, space = trained
    calibration = list(digits.loader("train", 128))[:3]
    validation = list(digits.loader("val", 512))
    candidates = CandidateBatch.cat([space.full(), space.sample(3, seed=5)])
    copies = []
    real_deepcopy = copy.deepcopy

    def counting_deepcopy(obj, memo=None):
        if memo is None and isinstance(obj, nn.Module):
            copies.append(obj)
        return real_deepcopy(obj, memo)

    monkeypatch.setattr(adaptive_bn_module.copy, "deepcopy", counting_deepcopy)
    evaluator = AdaptiveBNEvaluator(model, space, taylor, calibration, validation)
    scores = evaluator(candidates)
    monkeypatch.undo()
    assert len(copies) == 1
    for row in range(len(candidates)):
        pruned, _ = materialize(model, space, taylor, candidates[row])
        recalibrate_bn(pruned, calibration, torch.device("cpu"))
        assert float(scores[row]) == accuracy(pruned, validation, torch.device("cpu"))
    assert float(scores[0]) > 0.8
