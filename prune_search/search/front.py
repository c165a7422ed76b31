"""Pareto fronts and hypervolume of a study, from its archive.

Hypervolume is computed by pymoo on normalised objectives: the proxy divided by the proxy
of the smallest candidate (every group at its floor, strategy ``min``), MACs and params
divided by the base model's; the reference point is 1.1 in every objective, so the
hypervolume of a study lies in [0, 1.1^M] and is comparable between studies of one model.
"""

import numpy as np
from pymoo.indicators.hv import HV

from prune_search.search.nsga2 import rank_and_crowding

REFERENCE = 1.1


def normaliser(config: dict) -> np.ndarray:
    """Per-objective divisors ``[M]`` that map objectives to fractions of the base model."""
    base = config["base"]
    scale = {"proxy": base["proxy_ref"] or 1.0, "macs": base["macs"], "params": base["params"]}
    return np.array([scale[o] for o in config["objectives"]], dtype=np.float64)


def front_indices(F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Indices of the feasible non-dominated rows of ``F``."""
    if len(F) == 0:
        return np.zeros(0, dtype=np.int64)
    rank, _ = rank_and_crowding(F, violation)
    return np.flatnonzero((rank == 0) & (violation <= 0))


def hypervolume(F: np.ndarray, violation: np.ndarray, config: dict) -> float:
    """Hypervolume of the feasible front of ``F`` (see module docstring for normalisation)."""
    idx = front_indices(F, violation)
    if len(idx) == 0:
        return 0.0
    points = F[idx] / normaliser(config)
    return float(HV(ref_point=np.full(points.shape[1], REFERENCE))(points))


def hypervolume_history(
    F: np.ndarray, violation: np.ndarray, generation: np.ndarray, config: dict
) -> list[tuple[int, int, float]]:
    """(generation, trials so far, hypervolume) after each generation, in storage order."""
    history = []
    order = np.argsort(generation, kind="stable")
    for g in np.unique(generation):
        upto = order[generation[order] <= g]
        history.append((int(g), len(upto), hypervolume(F[upto], violation[upto], config)))
    return history
