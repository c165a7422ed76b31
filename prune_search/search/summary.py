"""The feasible Pareto trials as ``front``, ``finalize``, ``compare`` and the report show them."""

from typing import Any

import numpy as np
import torch

from prune_search.search.archive import Archive, load_archive
from prune_search.search.fidelity import corrected_objectives
from prune_search.search.front import front_indices
from prune_search.search.runner import Scorer
from prune_search.search.stored_front import shown_front
from prune_search.search.study import StudyHandle
from prune_search.storage.measurements import MEASURE


def front_rows(
    handle: StudyHandle,
    archive: Archive | None = None,
    corrected: bool = False,
    proxy_front: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The feasible Pareto trials, sorted by MACs: trial number, keep counts, strategies, costs, proxies,
    and ``score``, the value that ranks them (lower is better).

    In a multi-fidelity study with measured candidates the front is that of the measured candidates, with the
    measured score (``measured``: KL, loss, accuracy) in place of the proxy; with ``corrected``, the front of
    every candidate by the measured score or, where unmeasured, the surrogate-corrected proxy (the search's own
    view, dense across MACs). Otherwise the proxy's front (``proxy_front [K]``, its archive rows, when the caller
    holds them).
    """
    archive = archive or load_archive(handle)
    idx, rows_measured, scores = shown_front(handle, archive, proxy_front)
    estimate = None
    if corrected and len(rows_measured):
        estimate = corrected_objectives(handle, archive, scores)
        idx = front_indices(estimate, archive.violation)
    rows = archive_rows(handle, archive, idx, scores, estimate)
    return sorted(rows, key=lambda r: (r["macs"], r["params"], r["trial"]))


def archive_rows(
    handle: StudyHandle,
    archive: Archive,
    idx: np.ndarray,
    scores: dict[str, dict[str, float]],
    estimate: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The rows of :func:`front_rows` for the archive rows ``idx [K]``, in that order: ``score`` is the measured
    score in ``scores`` (``{digest: scores}``), else the proxy column of ``estimate [N, M]`` (corrected
    objectives), else the proxy."""
    if len(idx) == 0:
        return []
    rows = []
    for i, attrs in zip(idx, Scorer(handle, torch.device("cpu")).rows(archive.X[idx]), strict=True):
        measured = scores.get(archive.keys[i])
        rows.append(
            {
                "trial": int(archive.numbers[i]),
                "macs": attrs["macs"],
                "macs_pct": attrs["macs_pct"],
                "params": attrs["params"],
                "params_pct": attrs["params_pct"],
                **{f"proxy_{name}": value for name, value in attrs["proxy"].items()},
                "score": (
                    measured[MEASURE]
                    if measured
                    else float(estimate[i, handle.config["objectives"].index("proxy")])
                    if estimate is not None
                    else attrs["proxy"][handle.config["proxy"]]
                ),
                **({"measured": measured} if measured else {}),
                "keep": attrs["keep"],
                "strategy": attrs["strategy"],
            }
        )
    return rows
