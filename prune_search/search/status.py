"""What ``status`` prints: trials by state, workers, hypervolume now and over the study; read without torch."""

from typing import Any

import numpy as np

from prune_search.search.archive import load_archive
from prune_search.search.front import REFERENCE, front_hypervolume, front_indices, hypervolume_history
from prune_search.search.stored import StoredStudy
from prune_search.storage.bulk import trial_states
from prune_search.storage.measurements import count_claims, read_scores
from prune_search.storage.study_data import workers_of


def status(stored: StoredStudy) -> dict[str, Any]:
    """Trials by state, workers seen, hypervolume now and over the study's generations (at most 20 of them,
    spread evenly: :func:`~prune_search.search.front.hypervolume_history`)."""
    config = stored.config
    archive = load_archive(stored)
    front = front_indices(archive.F, archive.violation)
    history = hypervolume_history(archive.F, archive.violation, archive.generation, config)
    return {
        "study": stored.study.study_name,
        "trials": trial_states(stored.engine, stored.study_id),
        "front": len(front),
        "evaluations": {
            "budget": int(config.get("evaluations", 0)),
            "measured": len(read_scores(stored.engine, stored.study_id)),
            "claimed": count_claims(stored.engine, stored.study_id),
        },
        "hypervolume": front_hypervolume(archive.F[front], config),
        "reference_point": [REFERENCE] * len(config["objectives"]),
        "objectives": stored.objective_names(),
        "history": [{"generation": g, "trials": n, "hypervolume": hv} for g, n, hv in history],
        "workers": [
            {k: (str(v) if k in ("started_at", "last_seen") else v) for k, v in w.items() if k != "study_id"}
            for w in workers_of(stored.engine, stored.study_id)
        ],
        "config": config,
    }


def spread(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """At most ``count`` rows spread evenly over the list (which is sorted by MACs)."""
    if len(rows) <= count:
        return rows
    picks = np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))
    return [rows[i] for i in picks]
