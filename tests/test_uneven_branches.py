"""Branches of unequal width, concatenated or split: each keeps its share of the group, costs exact."""

import pytest
import torch
from model_checks import pruned_exactly, randomised
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.space import CandidateBatch, PruningSpace


class UnevenConcat(nn.Module):
    """Two branches (32 + 16 channels) concatenated, then added to a 48-channel residual branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 24, 3, padding=1)
        self.wide, self.narrow = nn.Conv2d(24, 32, 3, padding=1), nn.Conv2d(24, 16, 1)
        self.bn = nn.BatchNorm2d(48)
        self.residual = nn.Conv2d(24, 48, 1)
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.bn(torch.cat([self.wide(x), self.narrow(x)], 1)) + self.residual(x)
        return self.head(torch.relu(y).mean((2, 3)))


class UnevenSplit(nn.Module):
    """A 48-channel map split 32 + 16 into depthwise convs of different kernels (MixNet's mixed convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 48, 3, padding=1)
        self.dw3, self.dw5 = nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.Conv2d(16, 16, 5, padding=2, groups=16)
        self.pw = nn.Conv2d(48, 24, 1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(torch.relu(self.stem(x)), [32, 16], 1)
        y = self.pw(torch.cat([self.dw3(a), self.dw5(b)], 1))
        return self.head(torch.relu(y).mean((2, 3)))


def test_an_uneven_concatenation_keeps_each_branchs_share_with_exact_costs():
    torch.manual_seed(0)
    model, example = randomised(UnevenConcat()), torch.randn(2, 1, 12, 12)
    space = PruningSpace.from_model(model, example)
    group = next(g for g in space.groups if g.size == 48)
    assert group.blocks == 3  # blocks of 16: the 32-channel branch covers two, the 16-channel branch one
    assert sorted(m.module for m in group.members if group.partial(m)) == ["narrow", "wide"]
    candidates = CandidateBatch.cat([space.smallest(), space.sample(6, seed=2)])
    assert bool((candidates.keep[:, space.names.index(group.name)] % 3 == 0).all())
    for _, plan in pruned_exactly(model, space, example, candidates, "l1"):
        kept = torch.tensor(plan.kept[group.name])
        assert int((kept < 32).sum()) == 2 * int((kept >= 32).sum())  # each branch keeps its share


def test_channels_that_pass_a_split_are_left_whole_and_the_rest_costs_exactly():
    torch.manual_seed(0)
    model, example = randomised(UnevenSplit()), torch.randn(2, 1, 12, 12)
    space = PruningSpace.from_model(model, example)
    assert space.names == ["pw"]  # forward() fixes the split sizes [32, 16]: the stem's channels stay whole
    pruned_exactly(model, space, example, CandidateBatch.cat([space.smallest(), space.sample(3, seed=2)]), "l1")


class Ghost(nn.Module):
    """GhostNet's module: a map concatenated with a depthwise function of itself, added to a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.primary, self.cheap = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.primary(x)
        return self.head((torch.cat([y, self.cheap(y)], 1) + x).mean((2, 3)))


def test_channels_tied_to_two_channels_of_a_group_are_refused_in_one_line():
    with pytest.raises(PruneSearchError) as info:
        PruningSpace.from_model(Ghost(), torch.randn(2, 1, 12, 12))
    message = str(info.value)
    assert "\n" not in message and "as in GhostNet" in message and "--ignore-layers" in message


def test_an_elastic_layout_refuses_a_group_split_across_a_concatenation_in_one_line():
    from prune_search.elastic.layout import ChannelLayout

    model = UnevenConcat()
    space = PruningSpace.from_model(model, torch.randn(2, 1, 12, 12))
    orders = {group.name: torch.arange(group.size) for group in space.groups}
    with pytest.raises(PruneSearchError) as info:
        ChannelLayout(model, space, orders)
    assert "\n" not in str(info.value) and "split unevenly across layer" in str(info.value)
