"""Pareto fronts and hypervolume of a study, from its archive.

Hypervolume is computed by pymoo on normalised objectives: the proxy divided by the proxy
of the smallest candidate (every group at its floor, strategy ``min``), MACs and params
divided by the base model's; the reference point is 1.1 in every objective, so the
hypervolume of a study lies in [0, 1.1^M] and is comparable between studies of one model.
"""

from typing import Any

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

REFERENCE = 1.1


def normaliser(config: dict) -> np.ndarray:
    """Per-objective divisors ``[M]`` that map objectives to fractions of the base model."""
    base = config["base"]
    scale = {"proxy": base["proxy_ref"] or 1.0, "macs": base["macs"], "params": base["params"]}
    return np.array([scale[o] for o in config["objectives"]], dtype=np.float64)


def knee(rows: list[dict[str, Any]], objectives: list[str]) -> dict[str, Any]:
    """The front row closest (Euclidean) to the utopia point after min-max normalising each objective
    (the proxy objective read from the rows' ``score``: measured where the study measured them)."""
    column = {"proxy": "score", "macs": "macs", "params": "params"}
    F = np.array([[row[column[o]] for o in objectives] for row in rows], dtype=np.float64)
    span = F.max(0) - F.min(0)
    normalised = (F - F.min(0)) / np.where(span > 0, span, 1.0)
    return rows[int(np.argmin(np.linalg.norm(normalised, axis=1)))]


def front_indices(F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Indices of the feasible non-dominated rows of ``F [N, M]``, ascending (only the first front is sorted)."""
    feasible = np.flatnonzero(violation <= 0)
    if len(feasible) == 0:
        return np.zeros(0, dtype=np.int64)
    front = NonDominatedSorting().do(F[feasible], only_non_dominated_front=True)
    return np.sort(feasible[np.asarray(front, dtype=np.int64)])


def merged_front(F: np.ndarray, violation: np.ndarray, front: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The feasible front of rows ``front ∪ new`` of ``F [N, M]``, given that ``front`` is that of the rows
    before: a front kept up to date from new rows only, at a cost independent of the rows before."""
    rows = np.concatenate([front, new]).astype(np.int64)
    return rows[front_indices(F[rows], violation[rows])]


def front_hypervolume(points: np.ndarray, config: dict) -> float:
    """Hypervolume of front points ``[K, M]`` (objectives; see module docstring for normalisation)."""
    if len(points) == 0:
        return 0.0
    normalised = points / normaliser(config)
    return float(HV(ref_point=np.full(normalised.shape[1], REFERENCE))(normalised))


def hypervolume(F: np.ndarray, violation: np.ndarray, config: dict) -> float:
    """Hypervolume of the feasible front of ``F [N, M]`` (see module docstring for normalisation)."""
    return front_hypervolume(F[front_indices(F, violation)], config)


def hypervolume_history(
    F: np.ndarray, violation: np.ndarray, generation: np.ndarray, config: dict, points: int = 20
) -> list[tuple[int, int, float]]:
    """(generation, trials so far, hypervolume) after at most ``points`` generations spread evenly over the
    study (always the last), the front carried from one to the next, so the cost grows with the study's size
    and not with its number of generations."""
    history = []
    order = np.argsort(generation, kind="stable")
    ordered = generation[order]
    generations = np.unique(generation)
    picks = generations[
        np.unique(np.linspace(0, len(generations) - 1, min(points, len(generations))).round().astype(int))
    ]
    front, done = np.zeros(0, dtype=np.int64), 0
    for g in picks:
        upto = int(np.searchsorted(ordered, g, side="right"))
        front = merged_front(F, violation, front, order[done:upto])
        done = upto
        history.append((int(g), upto, front_hypervolume(F[front], config)))
    return history
