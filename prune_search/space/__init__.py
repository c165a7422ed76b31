"""The search space: prunable groups (torch-pruning DependencyGraph) and their genes.

Exported lazily (PEP 562): ``from prune_search.space import SpaceOptions`` imports only the torch-free
:mod:`~prune_search.space.options`, so reading a stored study's configuration stays light.
"""

from typing import TYPE_CHECKING

from prune_search.lazy import lazy_exports

# exported name → the module that defines it
_EXPORTS = {
    "STRATEGIES": "prune_search.space.options",
    "SpaceOptions": "prune_search.space.options",
    "ratio_param": "prune_search.space.options",
    "strategy_param": "prune_search.space.options",
    "CandidateBatch": "prune_search.space.candidates",
    "PruningSpace": "prune_search.space.space",
    "Group": "prune_search.space.structure",
    "Layer": "prune_search.space.structure",
    "Member": "prune_search.space.structure",
    "Structure": "prune_search.space.structure",
}

if TYPE_CHECKING:
    from prune_search.space.candidates import CandidateBatch
    from prune_search.space.options import STRATEGIES, SpaceOptions, ratio_param, strategy_param
    from prune_search.space.space import PruningSpace
    from prune_search.space.structure import Group, Layer, Member, Structure

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
