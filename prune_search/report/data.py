"""What a report shows, read from the study: archive, front, knee, finalized results, importance."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prune_search.finalize.run import RESULT_ATTR
from prune_search.finalize.select import knee
from prune_search.search.archive import Archive
from prune_search.search.front import hypervolume_history
from prune_search.search.runner import Scorer
from prune_search.search.study import StudyHandle
from prune_search.search.summary import front_rows, load_archive
from prune_search.storage.optuna_tables import user_attrs_of_trials

CLOUD_POINTS = 3000
"""At most this many trials in the report's grey cloud of all trials (a seeded sample in larger studies), so
that the report's size and build time stay bounded however large the study is."""


@dataclass
class ReportData:
    """Everything the figures need, as arrays and plain rows: ``macs``, ``params``, ``proxy`` ``[S]`` are
    those of the ``sample [S]`` of archive rows drawn in the cloud of all trials (MACs and params as counts)."""

    handle: StudyHandle
    archive: Archive
    sample: np.ndarray
    macs: np.ndarray
    params: np.ndarray
    proxy: np.ndarray
    front: list[dict[str, Any]]
    knee: dict[str, Any] | None
    finalized: list[dict[str, Any]]
    history: list[tuple[int, int, float]]


def finalized_results(handle: StudyHandle) -> list[dict[str, Any]]:
    """The finalized result of every trial that has one (``finalized.<field>`` user attrs, or an older study's
    ``finalized`` dict), by trial number; nested fields keep their dotted names (``sparse.asked``)."""
    results = []
    for number, attrs in user_attrs_of_trials(handle.engine, handle.study_id, RESULT_ATTR):
        fields = attrs.get(RESULT_ATTR) or {k.removeprefix(f"{RESULT_ATTR}."): v for k, v in attrs.items()}
        results.append(fields | {"trial": number})
    return results


def collect(handle: StudyHandle) -> ReportData:
    """Read the study once and derive every series the report plots."""
    archive = load_archive(handle)
    sample = np.arange(len(archive))
    if len(archive) > CLOUD_POINTS:
        sample = np.sort(np.random.default_rng(0).choice(len(archive), CLOUD_POINTS, replace=False))
    proxies, macs, params = Scorer(handle, torch.device("cpu")).measure(archive.X[sample])
    proxy = proxies[handle.config["proxy"]].astype(np.float64)
    macs, params = macs.astype(np.float64), params.astype(np.float64)
    front = front_rows(handle, archive)
    chosen = knee(front, handle.config["objectives"]) if front else None
    history = hypervolume_history(archive.F, archive.violation, archive.generation, handle.config)
    return ReportData(handle, archive, sample, macs, params, proxy, front, chosen, finalized_results(handle), history)
