"""The finalizer: prune a chosen trial for real, fine-tune with KD, export, record in the study."""

from prune_search.finalize.export import load_pruned
from prune_search.finalize.run import finalize_trial
from prune_search.finalize.select import choose
from prune_search.finalize.tune import FinalizeConfig, Tuned, fine_tune

__all__ = ["FinalizeConfig", "Tuned", "choose", "finalize_trial", "fine_tune", "load_pruned"]
