"""Prune-and-grow: several front trials as nested widths of ONE checkpoint, switched at run time."""

from prune_search.elastic.build import build_elastic
from prune_search.elastic.checkpoint import load_elastic, save_elastic
from prune_search.elastic.model import ElasticModel, Level
from prune_search.elastic.nesting import NestedLevels, nest, pick_trials, trial_candidates
from prune_search.elastic.run import make_elastic
from prune_search.elastic.train import fine_tune_level, fine_tune_levels, recalibrate_levels

__all__ = [
    "ElasticModel",
    "Level",
    "NestedLevels",
    "build_elastic",
    "fine_tune_level",
    "fine_tune_levels",
    "load_elastic",
    "make_elastic",
    "nest",
    "pick_trials",
    "recalibrate_levels",
    "save_elastic",
    "trial_candidates",
]
