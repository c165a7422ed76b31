"""The search space: prunable groups (torch-pruning DependencyGraph) and their genes."""

from prune_search.space.candidates import CandidateBatch
from prune_search.space.space import STRATEGIES, PruningSpace, SpaceOptions, ratio_param, strategy_param
from prune_search.space.structure import Group, Layer, Member, Structure

__all__ = [
    "STRATEGIES",
    "CandidateBatch",
    "Group",
    "Layer",
    "Member",
    "PruningSpace",
    "SpaceOptions",
    "Structure",
    "ratio_param",
    "strategy_param",
]
