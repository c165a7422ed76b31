"""The search: NSGA-II studies in SQL storage, Pareto fronts and hypervolume.

Exported lazily (PEP 562): reading a study (:mod:`~prune_search.search.stored`,
:mod:`~prune_search.search.status`) imports no torch; a name's module is imported on its first use.
"""

from typing import TYPE_CHECKING

from prune_search.lazy import lazy_exports

# exported name → the module that defines it
_EXPORTS = {
    "StartOptions": "prune_search.search.config",
    "GenerationReport": "prune_search.search.runner",
    "run_worker": "prune_search.search.runner",
    "StudyHandle": "prune_search.search.study",
    "create_or_join": "prune_search.search.study",
    "open_study": "prune_search.search.study",
}

if TYPE_CHECKING:
    from prune_search.search.config import StartOptions
    from prune_search.search.runner import GenerationReport, run_worker
    from prune_search.search.study import StudyHandle, create_or_join, open_study

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["GenerationReport", "StartOptions", "StudyHandle", "create_or_join", "open_study", "run_worker"]
