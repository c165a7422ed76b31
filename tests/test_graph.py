"""torch-pruning's grouping as prune-search runs it: the same channels, without its exponential re-walks, and
layers that a model applies through their weights seen as layers."""

import pytest
import torch
import torch_pruning as tp
from model_checks import fully_modelled, pruned_exactly, randomised
from test_uneven_branches import UnevenConcat
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.finalize.export import export, load_pruned
from prune_search.models import ModelSpec, build_model
from prune_search.space import CandidateBatch, PruningSpace
from prune_search.space.graph import build_graph


class SliceAdd(nn.Module):
    """RexNet's blocks: each widens the channels by ``grow`` and adds its input into the first ones."""

    def __init__(self, depth: int, width: int = 4, grow: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(width + grow * i, width + grow * (i + 1), 1) for i in range(depth))
        self.head = nn.Linear(width + grow * depth, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for conv in self.blocks:
            out = conv(torch.relu(x))
            x = torch.cat([out[:, : x.shape[1]] + x, out[:, x.shape[1] :]], 1)
        return self.head(x.mean((2, 3)))


def _pairs(group: tp.dependency.Group) -> dict[tuple, set[tuple[int, int]]]:
    """Each (layer dimension, handler) of a torch-pruning group with its (channel, root channel) pairs."""
    return {(item.dep.target, item.dep.handler): set(zip(item.idxs, item.root_idxs, strict=True)) for item in group}


def _channels(group: tp.dependency.Group) -> dict[tuple, set[int]]:
    return {key: {channel for channel, _ in pairs} for key, pairs in _pairs(group).items()}


@pytest.mark.parametrize(
    "build",
    [lambda: SliceAdd(4), lambda: build_model(ModelSpec("tv:resnet18", 1, 10, 32)), UnevenConcat],
    ids=["slice-additions", "resnet18", "uneven-concatenation"],
)
def test_every_group_holds_the_channels_torch_pruning_finds(build):
    torch.manual_seed(0)
    model = build().eval()
    graph = build_graph(model, torch.randn(1, 1, 32, 32))
    roots = [m for m in graph.module2node if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(roots) >= 4
    for module in roots:
        pruner = graph.get_pruner_of_module(module)
        channels = list(range(pruner.get_out_channels(module)))
        ours = graph.get_pruning_group(module, pruner.prune_out_channels, channels)
        theirs = tp.DependencyGraph.get_pruning_group(graph, module, pruner.prune_out_channels, channels)
        assert ours[0].dep.target.module is module
        assert _channels(ours) == _channels(theirs)
        if not isinstance(model, SliceAdd):  # there several root channels reach one: either may be kept
            assert _pairs(ours) == _pairs(theirs)


def test_a_deep_chain_of_slice_additions_is_grouped_at_once_not_after_hours():
    # torch-pruning 1.6's own grouping of this chain: 3 s at depth 6, 91 s at depth 8 (measured on this CPU)
    torch.manual_seed(0)
    model = SliceAdd(12).eval()
    with pytest.raises(PruneSearchError) as refusal:
        PruningSpace.from_model(model, torch.randn(2, 1, 8, 8))
    assert "more often than others" in str(refusal.value) and "--ignore-layers blocks." in str(refusal.value)


class FunctionalLinear(nn.Module):
    """A Linear layer applied through its weights, as torchvision's Swin applies ``qkv`` and ``proj``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.fc, self.head = nn.Linear(12, 16), nn.Linear(16, 24), nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.embed(x.flatten(1)))
        return self.head(torch.relu(nn.functional.linear(hidden, self.fc.weight, self.fc.bias)))


def test_a_layer_applied_through_its_weights_is_traced_and_pruned_as_a_layer():
    torch.manual_seed(0)
    model, example = FunctionalLinear().eval(), torch.randn(3, 1, 3, 4)
    space = PruningSpace.from_model(model, example)
    assert [(g.name, g.size) for g in space.groups] == [("embed", 16), ("fc", 24)]
    assert fully_modelled(model, space, example)
    pruned_exactly(model, space, example, CandidateBatch.cat([space.smallest(), space.sample(3, seed=0)]))


@pytest.mark.parametrize("name", ["tv:swin_t", "tv:maxvit_t"])
def test_torchvision_window_attention_stays_whole_while_its_mlps_are_pruned_exactly(name, tmp_path):
    spec = ModelSpec(name, 1, 10, 32)
    torch.manual_seed(0)
    model = randomised(build_model(spec))
    example = torch.randn(2, 1, 32, 32)
    space = PruningSpace.from_model(model, example)
    projections = ("attn.qkv", "attn.proj", "to_qkv", "merge")
    members = [m.module for g in space.groups for m in g.members]
    assert not [m for m in members if m.endswith(projections)]  # head width follows the input width there
    assert sum(name.endswith(("mlp.0", "mlp_layer.1")) for name in space.names) >= 4
    candidates = CandidateBatch.cat([space.smallest(), space.sample(2, seed=1)])
    pruned, plan = pruned_exactly(model, space, example, candidates)[0]
    export(pruned, plan, spec, {}, tmp_path)
    with torch.no_grad():
        assert torch.equal(load_pruned(tmp_path)(example), pruned.eval()(example))
