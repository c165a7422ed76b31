"""What a report shows, read from the study: archive, front, knee, finalized results, importance."""

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from optuna.storages._rdb import models
from sqlalchemy import select

from prune_search.finalize.run import RESULT_ATTR
from prune_search.finalize.select import knee
from prune_search.search.archive import Archive
from prune_search.search.front import hypervolume_history
from prune_search.search.runner import Evaluator
from prune_search.search.study import StudyHandle
from prune_search.search.summary import front_rows, load_archive


@dataclass
class ReportData:
    """Everything the figures need, as arrays and plain rows."""

    handle: StudyHandle
    archive: Archive
    macs: np.ndarray
    params: np.ndarray
    proxy: np.ndarray
    front: list[dict[str, Any]]
    knee: dict[str, Any] | None
    finalized: list[dict[str, Any]]
    history: list[tuple[int, int, float]]


def finalized_results(handle: StudyHandle) -> list[dict[str, Any]]:
    """The ``finalized`` user attribute of every trial that has one."""
    trials, attrs = models.TrialModel.__table__, models.TrialUserAttributeModel.__table__
    with handle.engine.connect() as conn:
        rows = conn.execute(
            select(trials.c.number, attrs.c.value_json)
            .join(attrs, attrs.c.trial_id == trials.c.trial_id)
            .where(trials.c.study_id == handle.study_id, attrs.c.key == RESULT_ATTR)
        )
        return [json.loads(value) | {"trial": number} for number, value in rows]


def collect(handle: StudyHandle) -> ReportData:
    """Read the study once and derive every series the report plots."""
    archive = load_archive(handle)
    evaluator = Evaluator(handle, torch.device("cpu"))
    proxies, macs, params = evaluator.measure(archive.X)
    proxy = proxies[handle.config["proxy"]].astype(np.float64)
    macs, params = macs.astype(np.float64), params.astype(np.float64)
    front = front_rows(handle, archive)
    chosen = knee(front, handle.config["objectives"]) if front else None
    history = hypervolume_history(archive.F, archive.violation, archive.generation, handle.config)
    return ReportData(handle, archive, macs, params, proxy, front, chosen, finalized_results(handle), history)
