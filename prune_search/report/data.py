"""What a report shows, read from the study: archive, front, knee, finalized results, importance.

A trial of this version stores its MACs, params and proxies and the front's rows are read from those
(:mod:`~prune_search.search.stored_front`), so a report imports no torch: at 100,000 trials that is most of its
memory. A study whose trials lack them (an older version's) has them recomputed with its cost model.
"""

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from prune_search.search.archive import Archive, load_archive
from prune_search.search.config import RESULT_ATTR
from prune_search.search.front import hypervolume_history, knee
from prune_search.search.stored import StoredStudy
from prune_search.search.stored_front import stored_front_rows
from prune_search.storage.optuna_tables import user_attrs_by_trial, user_attrs_of_trials

CLOUD_POINTS = 3000
"""At most this many trials in the report's grey cloud of all trials (a seeded sample in larger studies), so
that the report's size and build time stay bounded however large the study is."""


@dataclass
class ReportData:
    """Everything the figures need, as arrays and plain rows: ``macs``, ``params``, ``proxy`` ``[S]`` are
    those of the ``sample [S]`` of archive rows drawn in the cloud of all trials (MACs and params as counts);
    ``group_sizes`` the channels of each group, ``importance`` each group's channel scores ``[size]``."""

    stored: StoredStudy
    archive: Archive
    sample: np.ndarray
    macs: np.ndarray
    params: np.ndarray
    proxy: np.ndarray
    front: list[dict[str, Any]]
    knee: dict[str, Any] | None
    finalized: list[dict[str, Any]]
    history: list[tuple[int, int, float]]
    group_sizes: dict[str, int]
    importance: dict[str, np.ndarray]


def finalized_results(stored: StoredStudy) -> list[dict[str, Any]]:
    """The finalized result of every trial that has one (``finalized.<field>`` user attrs, or an older study's
    ``finalized`` dict), by trial number; nested fields keep their dotted names (``sparse.asked``)."""
    results = []
    for number, attrs in user_attrs_of_trials(stored.engine, stored.study_id, RESULT_ATTR):
        fields = attrs.get(RESULT_ATTR) or {k.removeprefix(f"{RESULT_ATTR}."): v for k, v in attrs.items()}
        results.append(fields | {"trial": number})
    return results


def stored_costs(stored: StoredStudy, archive: Archive, sample: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """MACs, params and the study's proxy ``[S]`` of the archive rows ``sample [S]`` as their trials stored
    them; None where one of them lacks any."""
    keys = ("macs", "params", f"proxy_{stored.config['proxy']}")
    ids = archive.trial_ids[sample].tolist()
    attrs = user_attrs_by_trial(stored.engine, ids)
    try:
        values = np.array([[attrs[i][k] for k in keys] for i in ids], dtype=np.float64).reshape(len(ids), 3)
    except KeyError:
        return None
    return values[:, 0], values[:, 1], values[:, 2]


def recomputed(
    stored: StoredStudy, archive: Archive, sample: np.ndarray
) -> tuple[tuple[np.ndarray, ...], list[dict[str, Any]]]:
    """The sample's MACs, params, proxy ``[S]`` and the front's rows, computed with the study's cost model and
    proxies (torch) for a study whose trials do not store them."""
    import torch

    from prune_search.search.runner import Scorer
    from prune_search.search.study import open_study
    from prune_search.search.summary import front_rows

    handle = open_study(stored.url, stored.study.study_name)
    proxies, macs, params = Scorer(handle, torch.device("cpu")).measure(archive.X[sample])
    costs = macs.astype(np.float64), params.astype(np.float64), proxies[stored.config["proxy"]].astype(np.float64)
    return costs, front_rows(handle, archive)


def collect(stored: StoredStudy) -> ReportData:
    """Read the study once and derive every series the report plots."""
    archive = load_archive(stored)
    sample = np.arange(len(archive))
    if len(archive) > CLOUD_POINTS:
        sample = np.sort(np.random.default_rng(0).choice(len(archive), CLOUD_POINTS, replace=False))
    costs, front = stored_costs(stored, archive, sample), stored_front_rows(stored, archive)
    if costs is None or front is None:
        costs, front = recomputed(stored, archive, sample)
    macs, params, proxy = costs
    chosen = knee(front, stored.config["objectives"]) if front else None
    history = hypervolume_history(archive.F, archive.violation, archive.generation, stored.config)
    groups = json.loads(stored.space_json)["structure"]["groups"]
    scores = json.loads(stored.importance_json)["scores"]
    return ReportData(
        stored,
        archive,
        sample,
        macs,
        params,
        proxy,
        front,
        chosen,
        finalized_results(stored),
        history,
        {g["name"]: int(g["size"]) for g in groups},
        {g["name"]: np.asarray(scores[g["name"]], dtype=np.float64) for g in groups},
    )
