import json
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
import torch
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec, build_model
from prune_search.space import CandidateBatch, PruningSpace, SpaceOptions
from prune_search.space.deadline import TRACE_TIMEOUT_ENV, WORKER_NAME
from prune_search.space.graph import quiet_depth_warnings


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return build_model(ModelSpec("resnet20", 1, 10, 8)).eval()


@pytest.fixture(scope="module")
def space(resnet20):
    return PruningSpace.from_model(resnet20, torch.randn(2, 1, 8, 8))


def test_groups_have_stable_readable_names_and_sizes(space):
    assert len(space) == 12  # 9 block-internal groups + 3 residual stages
    assert space.names[:2] == ["conv1", "layer1.0.conv1"]
    assert "fc" not in space.names
    assert space.sizes.tolist() == [16, 16, 16, 16, 32, 32, 32, 32, 64, 64, 64, 64]
    sizes = dict(zip(space.names, space.sizes.tolist(), strict=True))
    assert sizes["layer2.0.downsample.0"] == 32  # stage 2 residual group, rooted at its shortcut


def test_resnet56_has_the_30_groups_depgraph_reports():
    model = build_model(ModelSpec("resnet56", 3, 10, 32))
    assert len(PruningSpace.from_model(model, torch.randn(1, 3, 32, 32))) == 30


def test_ignored_layers_take_their_group_out_of_the_space(resnet20):
    space = PruningSpace.from_model(resnet20, torch.randn(1, 1, 8, 8), ignored_layers=["conv1", "layer1.0.conv1"])
    assert "conv1" not in space.names
    assert "layer1.0.conv1" not in space.names
    assert len(space) == 10


def test_keep_counts_follow_the_decode_rule_and_round_to_never_breaks_the_floor(resnet20):
    space = PruningSpace.from_model(resnet20, torch.randn(1, 1, 8, 8), round_to=8, min_keep=2, min_ratio=0.05)
    ratios = torch.tensor(space.options.ratios, dtype=torch.float64)[:, None].expand(-1, len(space))
    keep = space.keep_counts(ratios)
    n = space.sizes
    assert bool((keep >= torch.clamp(n, max=2)).all())
    assert bool((keep <= n).all())
    assert keep[:, 0].tolist()[:3] == [2, 2, 2]  # 16 channels at 5 %, 10 %: rounding to 8 gives 0, the floor holds
    assert int(keep[-1, 0]) == 16
    multiple = (keep % 8 == 0) | (keep == 2) | (keep == n)
    assert bool(multiple.all())


def test_optuna_params_round_trip_and_optuna_samples_inside_the_space(space):
    batch = space.sample(30, seed=4)
    rows = space.to_params(batch)
    again = CandidateBatch.cat([space.from_params(row) for row in rows])
    assert torch.equal(again.keep, batch.keep)
    assert torch.equal(again.strategy, batch.strategy)
    assert set(rows[0]) == {f"{kind}/{name}" for name in space.names for kind in ("ratio", "strategy")}
    study = optuna.create_study(directions=["minimize", "minimize"])
    for _ in range(5):
        trial = study.ask(space.distributions())
        space.validate(space.from_params(trial.params))


def test_sampling_is_seeded_and_covers_both_strategies(space):
    a, b = space.sample(50, seed=1), space.sample(50, seed=1)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.strategy, b.strategy)
    assert not torch.equal(a.keep, space.sample(50, seed=2).keep)
    assert set(a.strategy.unique().tolist()) == {0, 1}
    space.validate(a)


def test_space_json_round_trip(space):
    again = PruningSpace.from_json(space.to_json())
    assert again.names == space.names
    assert again.options == space.options
    assert again.distributions() == space.distributions()


@pytest.mark.parametrize(
    ("keep_value", "strategy_value", "needle"),
    [(0, 0, "keeps 0 of 16"), (17, 0, "keeps 17 of 16"), (16, 2, "strategy code 2"), (16, -1, "strategy code -1")],
)
def test_candidates_outside_the_space_are_refused(space, keep_value, strategy_value, needle):
    batch = space.full()
    batch.keep[0, 0] = keep_value
    batch.strategy[0, 0] = strategy_value
    with pytest.raises(PruneSearchError, match=needle) as info:
        space.validate(batch)
    assert "conv1" in str(info.value)


def test_candidates_of_the_wrong_shape_are_refused(space):
    with pytest.raises(PruneSearchError, match=r"\[P, 12\]"):
        space.validate(CandidateBatch(torch.ones(2, 5, dtype=torch.int64), torch.zeros(2, 5, dtype=torch.int64)))


def test_params_with_unknown_strategy_or_ratio_are_refused(space):
    row = space.to_params(space.full())[0]
    with pytest.raises(PruneSearchError, match="unknown strategy 'max'"):
        space.from_params({**row, "strategy/conv1": "max"})
    with pytest.raises(PruneSearchError, match="ratios must lie"):
        space.from_params({**row, "ratio/conv1": 1.5})
    with pytest.raises(PruneSearchError, match="lack 'ratio/conv1'"):
        space.from_params({k: v for k, v in row.items() if k != "ratio/conv1"})


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"min_ratio": 0.0}, "min_ratio"),
        ({"min_ratio": 0.1, "ratio_step": 0.07}, "multiple of ratio_step"),
        ({"strategies": ("min", "max")}, "unknown strategy"),
        ({"round_to": 0}, "round_to"),
    ],
)
def test_bad_space_options_are_refused(options, needle):
    with pytest.raises(PruneSearchError, match=needle):
        SpaceOptions(**options).validate()


def test_example_input_of_the_wrong_shape_is_named(resnet20):
    with pytest.raises(PruneSearchError) as info:
        PruningSpace.from_model(resnet20, torch.randn(2, 3, 8, 8))
    message = str(info.value)
    assert "[2, 3, 8, 8]" in message
    assert "layer 'conv1'" in message
    assert "\n" not in message


class _Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3)
        self.body = nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x).detach()
        return self.head(self.body(x).mean((2, 3)))


def test_a_layer_the_dependency_graph_cannot_trace_is_named():
    with pytest.raises(PruneSearchError, match="cannot trace layer 'stem'"):
        PruningSpace.from_model(_Detached(), torch.randn(1, 1, 8, 8))


def test_unknown_ignored_layer_is_named(resnet20):
    with pytest.raises(PruneSearchError, match="ignored layer 'layer9'") as info:
        PruningSpace.from_model(resnet20, torch.randn(1, 1, 8, 8), ignored_layers=["layer9"])
    assert "did you mean 'layer" in str(info.value)
    assert "e.g. conv1, layer1.0.conv1" in str(info.value)


def test_an_ignored_container_leaves_every_channel_coupled_to_its_layers_whole(resnet20):
    space = PruningSpace.from_model(resnet20, torch.randn(1, 1, 8, 8), ignored_layers=["layer1"])
    assert space.names[0] == "layer2.0.conv1"  # layer1's own groups and the stem's stage group are left out
    assert not any(name.startswith("layer1.") for group in space.groups for name in (m.module for m in group.members))


class _PerChannelPReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3)
        self.widen = nn.Conv2d(8, 16, 1)
        self.act = nn.PReLU(16)
        self.body = nn.Conv2d(16, 16, 3)
        self.act2 = nn.PReLU(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.act2(self.body(self.act(self.widen(self.stem(x).relu()))))
        return self.head(x.mean((2, 3)))


def test_a_refusal_names_the_flag_and_every_layer_to_pass_and_those_layers_make_the_space():
    model, example = _PerChannelPReLU(), torch.randn(1, 1, 12, 12)
    with pytest.raises(PruneSearchError) as info:
        PruningSpace.from_model(model, example)
    message = str(info.value)
    assert message.startswith("layer 'act' (PReLU) is coupled to group 'widen', but prune-search can only prune")
    assert message.endswith("pass --ignore-layers widen,body (Python: ignored_layers=['widen', 'body'])")
    assert "\n" not in message
    assert PruningSpace.from_model(model, example, ignored_layers=["widen", "body"]).names == ["stem"]


class _Grouped(nn.Module):
    """A grouped convolution (4 groups) widening 16 to 24 channels, and one taking 4 channels, one per group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3)
        self.widen = nn.Conv2d(8, 16, 1)
        self.grouped = nn.Conv2d(16, 24, 3, groups=4)
        self.narrow = nn.Conv2d(24, 4, 1)
        self.spread = nn.Conv2d(4, 16, 1, groups=4)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.grouped(self.widen(self.stem(x).relu()).relu()).relu()
        return self.head(self.spread(self.narrow(x).relu()).mean((2, 3)))


def test_grouped_convolutions_split_their_groups_into_blocks_and_keep_counts_are_multiples():
    space = PruningSpace.from_model(_Grouped(), torch.randn(1, 1, 12, 12), round_to=8, min_keep=2)
    layout = {g.name: (g.size, g.blocks, g.aligned) for g in space.groups}
    # widen feeds the grouped conv (same positions in each group), grouped's own output only needs equal
    # counts; narrow's 4 channels go one per group into spread, so no count below 4 is valid: left out
    assert layout == {
        "stem": (8, 1, False),
        "widen": (16, 4, True),
        "grouped": (24, 4, False),
        "spread": (16, 4, False),
    }
    keep = space.level_keep_counts()
    assert bool((keep % space.sizes.new_tensor([1, 4, 4, 4])[:, None] == 0).all())
    assert keep[1].unique().tolist() == [4, 8, 16]  # lcm(round_to 8, 4 blocks) = 8; the floor 2 rounds up to 4
    assert keep[2].unique().tolist() == [4, 8, 16, 24]
    wrong = space.full()
    wrong.keep[0, 1] = 6
    with pytest.raises(PruneSearchError, match="keeps 6 of 16 channels in group 'widen'"):
        space.validate(wrong)


class _Concatenated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(1, 8, 3)
        self.right = nn.Conv2d(1, 8, 3)
        self.grouped = nn.Conv2d(16, 16, 3, groups=4)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.grouped(torch.cat([self.left(x), self.right(x)], 1).relu())
        return self.head(x.mean((2, 3)))


def test_a_grouped_convolution_fed_by_a_concatenation_is_refused_with_the_layers_to_pass():
    with pytest.raises(PruneSearchError) as info:
        PruningSpace.from_model(_Concatenated(), torch.randn(1, 1, 12, 12))
    message = str(info.value)
    assert message.startswith(
        "layer 'grouped' (Conv2d) splits its 16 channels into 4 groups, but group 'left' covers them only in part"
    )
    assert message.endswith("pass --ignore-layers left,right (Python: ignored_layers=['left', 'right'])")


def test_a_layernorm_over_several_dimensions_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.LayerNorm([8, 6, 6]), nn.Flatten(), nn.Linear(288, 10))
    with pytest.raises(PruneSearchError, match=r"LayerNorm '1' in group '0' normalises over several dimensions"):
        PruningSpace.from_model(model, torch.randn(1, 1, 8, 8))


def test_space_json_keeps_blocks_and_parameters_and_reads_spaces_stored_before_them():
    space = PruningSpace.from_model(_Grouped(), torch.randn(1, 1, 12, 12))
    assert PruningSpace.from_json(space.to_json()).groups == space.groups
    data = json.loads(space.to_json())
    for group in data["structure"]["groups"]:
        for key in ("parameters", "blocks", "aligned"):
            del group[key]
    old = PruningSpace.from_json(json.dumps(data))
    assert [(g.blocks, g.aligned, g.parameters) for g in old.groups] == [(1, False, [])] * len(space)


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "nan"])
def test_a_bad_trace_time_limit_is_refused(resnet20, monkeypatch, value):
    monkeypatch.setenv(TRACE_TIMEOUT_ENV, value)
    with pytest.raises(PruneSearchError, match=f"{TRACE_TIMEOUT_ENV} must be a positive number of seconds"):
        PruningSpace.from_model(resnet20, torch.randn(1, 1, 8, 8))


class _Waiting(nn.Module):
    """A network whose forward pass waits for ``done``."""

    def __init__(self, done: threading.Event) -> None:
        super().__init__()
        self.done = done
        self.body = nn.Conv2d(1, 8, 3)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        self.done.wait(60)
        return self.head(self.body(x).mean((2, 3)))


def test_a_slow_trace_is_refused_in_a_worker_thread_too(monkeypatch):
    done = threading.Event()
    monkeypatch.setenv(TRACE_TIMEOUT_ENV, "0.2")
    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(PruningSpace.from_model, _Waiting(done), torch.randn(1, 1, 8, 8))
            with pytest.raises(PruneSearchError) as info:
                future.result(timeout=30)
    finally:
        done.set()
        _join_traces()
    message = str(info.value)
    assert message.startswith("building the pruning space of _Waiting took more than 0.2 s (it was running the example")
    assert "torch-pruning cannot follow this architecture yet" in message


def _join_traces() -> None:
    """Wait for traces left running after a time-out to end (they would outlive the test)."""
    for thread in threading.enumerate():
        if thread.name == WORKER_NAME:
            thread.join(30)


def test_torch_prunings_depth_warnings_are_hidden_only_inside_the_block():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_depth_warnings(), quiet_depth_warnings():
            warnings.warn("Maximum recursive depth reached!", stacklevel=1)
        warnings.warn("Maximum recursive depth reached!", stacklevel=1)
        warnings.warn("another warning", stacklevel=1)
    assert [str(w.message) for w in seen] == ["Maximum recursive depth reached!", "another warning"]
