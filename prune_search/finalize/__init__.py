"""The finalizer: prune a chosen trial for real, fine-tune with KD, export, record in the study."""

from prune_search.finalize.export import load_pruned
from prune_search.finalize.run import FinalizeConfig, finalize_trial
from prune_search.finalize.select import choose

__all__ = ["FinalizeConfig", "choose", "finalize_trial", "load_pruned"]
