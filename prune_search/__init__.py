"""prune-search: multi-objective architecture search for structured pruning, on Optuna.

The Python API is exported here lazily (PEP 562): ``import prune_search`` loads none of
the search stack (Optuna, SQLAlchemy, pymoo, SciPy); a name's module is imported on its
first use, e.g. ``prune_search.PruningSpace``.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prune_search.lazy import lazy_exports

try:
    __version__ = version("prune-search")
except PackageNotFoundError:
    __version__ = "0+unknown"

# exported name → the module that defines it
_EXPORTS = {
    "PruningSpace": "prune_search.space.space",
    "compute_importance": "prune_search.evaluators.importance",
    "ProxyEvaluator": "prune_search.evaluators.proxy",
    "CostModel": "prune_search.evaluators.cost",
    "PruningPlan": "prune_search.evaluators.materialize",
    "materialize": "prune_search.evaluators.materialize",
    "apply_plan": "prune_search.evaluators.materialize",
    "load_pruned": "prune_search.finalize.export",
}

if TYPE_CHECKING:
    from prune_search.evaluators.cost import CostModel
    from prune_search.evaluators.importance import compute_importance
    from prune_search.evaluators.materialize import PruningPlan, apply_plan, materialize
    from prune_search.evaluators.proxy import ProxyEvaluator
    from prune_search.finalize.export import load_pruned
    from prune_search.space.space import PruningSpace


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "CostModel",
    "ProxyEvaluator",
    "PruningPlan",
    "PruningSpace",
    "__version__",
    "apply_plan",
    "compute_importance",
    "load_pruned",
    "materialize",
]
