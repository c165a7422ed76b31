"""NSGA-II over integer genes, vectorised with numpy (pymoo's sorting and crowding).

A population is an int array ``X [N, 2G]``: columns ``0..G-1`` are ratio-grid levels
(``0..R-1``), columns ``G..2G-1`` strategy codes (``0..S-1``). Objectives ``F [N, M]`` are
minimised; ``violation [N]`` ≥ 0 is the total constraint violation (0: feasible).
Constrained domination (Deb 2002): feasible beats infeasible, infeasible ones by violation.
"""

import functools

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


@functools.cache
def _crowding():
    """pymoo's crowding distance (its module pulls in scipy: loaded when a search ranks, not by read commands)."""
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function

    return get_crowding_function("cd")


def rank_and_crowding(F: np.ndarray, violation: np.ndarray, enough: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Front rank (0 = non-dominated feasible) and crowding distance of every individual.

    With ``enough``, feasible fronts are ranked only until they hold ``enough`` individuals: the feasible rest
    share the next rank (crowding 0), and infeasible ones follow by violation, as without it.
    """
    n = len(F)
    rank = np.zeros(n, dtype=np.int64)
    crowding = np.zeros(n)
    feasible = np.flatnonzero(violation <= 0)
    stop = len(feasible) if enough is None else enough
    fronts = NonDominatedSorting().do(F[feasible], n_stop_if_ranked=stop) if len(feasible) else []
    ranked = np.zeros(len(feasible), dtype=bool)
    for r, front in enumerate(fronts):
        members = feasible[front]
        rank[members] = r
        ranked[front] = True
        crowding[members] = _crowding().do(F[members]) if len(members) > 2 else np.inf
    rest = feasible[~ranked]
    rank[rest] = len(fronts)
    infeasible = np.flatnonzero(violation > 0)
    order = np.argsort(violation[infeasible], kind="stable")
    rank[infeasible[order]] = len(fronts) + int(len(rest) > 0) + np.arange(len(infeasible))
    return rank, crowding


def survivors(F: np.ndarray, violation: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` best individuals by (rank ascending, crowding descending); fronts past the
    first ``size`` ranked individuals are not sorted."""
    rank, crowding = rank_and_crowding(F, violation, enough=size)
    order = np.lexsort((-crowding, rank))
    return order[:size]


def tournament(rank: np.ndarray, crowding: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` winners of binary tournaments (lower rank, then larger crowding)."""
    a, b = rng.integers(len(rank), size=(2, count))
    a_wins = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (crowding[a] >= crowding[b]))
    return np.where(a_wins, a, b)


def vary(
    parents: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    levels: int,
    strategies: int,
    rng: np.random.Generator,
    crossover_prob: float = 0.9,
    min_level: np.ndarray | int = 0,
) -> np.ndarray:
    """Children of parent pairs: uniform crossover, then per-gene mutation with probability 1/genes.

    A mutated level moves by ±1..3 grid steps, clipped to ``min_level`` (per group ``[G]`` or
    one for all) .. ``levels - 1``; a mutated strategy is redrawn.
    """
    x, y = parents[first], parents[second]
    genes = parents.shape[1]
    half = genes // 2
    swap = (rng.random((len(x), genes)) < 0.5) & (rng.random((len(x), 1)) < crossover_prob)
    child = np.where(swap, y, x)
    mutate = rng.random(child.shape) < 1.0 / genes
    steps = rng.integers(1, 4, size=child.shape) * rng.choice([-1, 1], size=child.shape)
    level_part = np.clip(child[:, :half] + steps[:, :half], min_level, levels - 1)
    child[:, :half] = np.where(mutate[:, :half], level_part, child[:, :half])
    redraw = rng.integers(strategies, size=(len(child), half))
    child[:, half:] = np.where(mutate[:, half:], redraw, child[:, half:])
    return child
