"""The search: NSGA-II studies in SQL storage, Pareto fronts and hypervolume."""

from prune_search.search.config import StartOptions
from prune_search.search.runner import GenerationReport, run_worker
from prune_search.search.study import StudyHandle, create_or_join, open_study

__all__ = ["GenerationReport", "StartOptions", "StudyHandle", "create_or_join", "open_study", "run_worker"]
