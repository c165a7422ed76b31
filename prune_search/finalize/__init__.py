"""The finalizer: prune a chosen trial for real, fine-tune with KD, export, record in the study.

The names below load their module on first use (PEP 562), so that ``load_pruned`` (the export
reader) needs none of the study machinery (Optuna, SQLAlchemy, pymoo).
"""

from typing import TYPE_CHECKING

from prune_search.lazy import lazy_exports

_EXPORTS = {
    "load_pruned": "prune_search.finalize.export",
    "finalize_trial": "prune_search.finalize.run",
    "choose": "prune_search.finalize.select",
    "FinalizeConfig": "prune_search.finalize.tune",
    "Tuned": "prune_search.finalize.tune",
    "fine_tune": "prune_search.finalize.tune",
}

if TYPE_CHECKING:
    from prune_search.finalize.export import load_pruned
    from prune_search.finalize.run import finalize_trial
    from prune_search.finalize.select import choose
    from prune_search.finalize.tune import FinalizeConfig, Tuned, fine_tune


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = ["FinalizeConfig", "Tuned", "choose", "finalize_trial", "fine_tune", "load_pruned"]
