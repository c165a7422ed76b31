"""The feasible Pareto trials as ``front`` prints them, read from what each trial stored (no torch).

A trial of this version stores its keep counts (as text), MACs, params and every proxy (6 significant
digits) as user attributes, and its strategies in its genes; the front's rows are read from those, so ``front``
answers without building the space. A study whose front trials lack them (an older version's) gives None, and
the caller recomputes the rows (:func:`~prune_search.search.summary.front_rows`).
"""

from typing import Any

import numpy as np

from prune_search.search.archive import Archive, load_archive
from prune_search.search.config import KEEP_ATTR, keep_counts
from prune_search.search.front import front_indices
from prune_search.search.stored import StoredStudy
from prune_search.storage.measurements import MEASURE, read_scores
from prune_search.storage.optuna_tables import user_attrs_by_trial

COST_ATTRS = ("macs", "macs_pct", "params", "params_pct")


def measured_objectives(
    stored: StoredStudy, archive: Archive
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, float]]]:
    """Objectives ``[K, M]`` of the archive's measured candidates (the proxy column replaced by the measured
    score, :data:`~prune_search.storage.measurements.MEASURE`), their archive rows ``[K]`` and
    ``{digest: scores}``."""
    scores = read_scores(stored.engine, stored.study_id)
    rows = np.array([i for i, key in enumerate(archive.keys) if key in scores], dtype=np.int64)
    F = archive.F[rows].copy()
    if len(rows) and "proxy" in stored.config["objectives"]:
        column = stored.config["objectives"].index("proxy")
        F[:, column] = [scores[archive.keys[i]][MEASURE] for i in rows]
    return F, rows, scores


def shown_front(
    stored: StoredStudy, archive: Archive, proxy_front: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, float]]]:
    """The archive rows ``[K]`` of the front that ``front`` shows, the measured candidates' rows and
    ``{digest: scores}``: with measured candidates, the front of those by the measured score; otherwise the
    proxy's front (``proxy_front``, when the caller holds it)."""
    F, rows_measured, scores = measured_objectives(stored, archive)
    if len(rows_measured):
        return rows_measured[front_indices(F, archive.violation[rows_measured])], rows_measured, scores
    idx = proxy_front if proxy_front is not None else front_indices(archive.F, archive.violation)
    return idx, rows_measured, scores


def stored_front_rows(stored: StoredStudy, archive: Archive | None = None) -> list[dict[str, Any]] | None:
    """The rows of :func:`~prune_search.search.summary.front_rows` (without ``corrected``), sorted by MACs,
    with the proxies as stored (6 significant digits); None where a front trial lacks the stored attributes."""
    archive = archive or load_archive(stored)
    idx, _, scores = shown_front(stored, archive)
    attrs = user_attrs_by_trial(stored.engine, archive.trial_ids[idx].tolist())
    names, strategies = stored.group_names(), stored.strategies()
    proxy = stored.config["proxy"]
    out = []
    for i in idx:
        stored_attrs = attrs.get(int(archive.trial_ids[i]), {})
        keep = stored_attrs.get(KEEP_ATTR)
        proxies = {k: v for k, v in stored_attrs.items() if k.startswith("proxy_")}
        complete = all(a in stored_attrs for a in COST_ATTRS) and f"proxy_{proxy}" in proxies
        if not (complete and keep is not None):
            return None
        measured = scores.get(archive.keys[i])
        codes = archive.X[i, len(names) :]
        out.append(
            {
                "trial": int(archive.numbers[i]),
                **{a: stored_attrs[a] for a in COST_ATTRS},
                **proxies,
                "score": measured[MEASURE] if measured else proxies[f"proxy_{proxy}"],
                **({"measured": measured} if measured else {}),
                "keep": keep_counts(keep, names),
                "strategy": {name: strategies[int(code)] for name, code in zip(names, codes, strict=True)},
            }
        )
    return sorted(out, key=lambda r: (r["macs"], r["params"], r["trial"]))
