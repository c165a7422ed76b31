"""Selection that stays cheap as a study grows gives what ranking the whole study gives."""

import numpy as np
import pytest

from prune_search.search import nsga2
from prune_search.search.front import front_indices, hypervolume, hypervolume_history, merged_front
from prune_search.search.runner import Elite


class _Rows:
    """The part of an archive that selection reads: objectives and violations of the first ``size`` rows."""

    def __init__(self, F: np.ndarray, violation: np.ndarray) -> None:
        self._F, self._violation, self.size = F, violation, 0

    def __len__(self) -> int:
        return self.size

    @property
    def F(self) -> np.ndarray:
        return self._F[: self.size]

    @property
    def violation(self) -> np.ndarray:
        return self._violation[: self.size]


def _study(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Objectives ``[rows, 3]`` shaped like a search's (proxy falls as MACs grow) and 10 % infeasible rows."""
    rng = np.random.default_rng(seed)
    macs = rng.random(rows)
    F = np.stack([np.exp(-4 * macs) + 0.2 * rng.random(rows), macs, 0.8 * macs + 0.2 * rng.random(rows)], axis=1)
    violation = np.where(rng.random(rows) < 0.1, rng.random(rows), 0.0)
    return F, violation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_survivors_ranked_only_as_far_as_needed_are_those_of_a_full_ranking(seed):
    F, violation = _study(3000, seed)
    rank, crowding = nsga2.rank_and_crowding(F, violation)
    full = np.lexsort((-crowding, rank))[:100]
    assert sorted(nsga2.survivors(F, violation, 100).tolist()) == sorted(full.tolist())
    early, _ = nsga2.rank_and_crowding(F, violation, enough=100)
    assert early[violation > 0].min() > early[violation <= 0].max()


def test_a_front_merged_generation_by_generation_is_the_front_of_all_rows():
    F, violation = _study(5000, 3)
    front = np.zeros(0, dtype=np.int64)
    for start in range(0, 5000, 100):
        front = merged_front(F, violation, front, np.arange(start, start + 100))
    assert sorted(front.tolist()) == front_indices(F, violation).tolist()


def test_the_elite_of_new_rows_is_the_elitist_selection_and_the_whole_front():
    F, violation = _study(4000, 4)
    rows, elite = _Rows(F, violation), Elite(100)
    pool = np.zeros(0, dtype=np.int64)
    for size in range(100, 4001, 100):
        new = np.arange(rows.size, size)
        rows.size = size
        elite.update(rows)
        candidates = np.concatenate([pool, new])
        pool = candidates[nsga2.survivors(F[candidates], violation[candidates], 100)]
        assert sorted(elite.survivors.tolist()) == sorted(pool.tolist())
    assert sorted(elite.front.tolist()) == front_indices(F, violation).tolist()


def test_the_hypervolume_history_samples_the_study_and_ends_at_its_hypervolume():
    F, violation = _study(6000, 5)
    generation = np.repeat(np.arange(60), 100)
    config = {"objectives": ["proxy", "macs", "params"], "base": {"proxy_ref": 1.2, "macs": 1.0, "params": 1.0}}
    history = hypervolume_history(F, violation, generation, config)
    assert len(history) == 20 and history[0][0] == 0 and history[-1][0] == 59
    assert [n for _, n, _ in history] == [100 * (g + 1) for g, _, _ in history]
    assert [hv for _, _, hv in history] == sorted(hv for _, _, hv in history)
    assert history[-1][2] == pytest.approx(hypervolume(F, violation, config))
    assert history[3][2] == pytest.approx(hypervolume(F[: history[3][1]], violation[: history[3][1]], config))
