"""The measured fast fitness: one group pruned at a time, BN-recalibrated, read back by table lookups.

For every group ``g``, strategy ``s`` and keep count ``k`` the space's ratio grid can reach,
the network with only group ``g`` pruned to ``k`` channels (by ``s``) is BatchNorm-recalibrated
and scored on a fixed sample of the TRAIN split (val and test never feed the search): the
increase over the unpruned model of the mean cross-entropy (``loss``) and of the mean
KL(unpruned ‖ pruned) of the output distributions (``kl``), both in nats per sample. A
candidate's fitness is the sum of its groups' entries, so a population costs one gather.
Keep counts the grid cannot reach (e.g. a baseline's) are linearly interpolated; keeping a
whole group costs 0.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from prune_search.errors import PruneSearchError
from prune_search.evaluators.adaptive_bn import AdaptiveBNEvaluator
from prune_search.space import CandidateBatch, PruningSpace

TABLE_METRICS = ("kl", "loss")


def single_group_candidates(space: PruningSpace, entries: list[tuple[int, int, int]]) -> CandidateBatch:
    """One candidate per ``(group, strategy code, keep count)``: that group pruned, every other group whole."""
    keep = space.sizes.repeat(len(entries), 1)
    strategy = torch.zeros_like(keep)
    for row, (g, s, k) in enumerate(entries):
        keep[row, g], strategy[row, g] = k, s
    return CandidateBatch(keep, strategy)


def measured_counts(space: PruningSpace, per_group: int) -> list[list[int]]:
    """Per group, at most ``per_group`` keep counts below its size that the ratio grid reaches at or above
    the group's floor, spread evenly over them (the smallest always included), ascending."""
    levels, lowest = space.level_keep_counts(), space.min_levels()
    out = []
    for g, group in enumerate(space.groups):
        reachable = sorted({int(k) for k in levels[g, int(lowest[g]) :].tolist()} - {group.size})
        if len(reachable) > per_group:
            picks = np.linspace(0, len(reachable) - 1, per_group).round().astype(int)
            reachable = [reachable[i] for i in sorted(set(picks.tolist()))]
        out.append(reachable)
    return out


@dataclass
class FitnessTable:
    """Measured increases per group, strategy and keep count.

    ``counts[g]``: measured keep counts of group ``g``; ``values[metric][g][s]``: the increase
    (nats per sample) at each of them with strategy ``space.strategies[s]``; ``setup``: how it
    was measured (batches, samples, seed), stored with the study.
    """

    groups: list[str]
    strategies: list[str]
    counts: list[list[int]]
    values: dict[str, list[list[list[float]]]]
    setup: dict[str, int]

    def dense(self, space: PruningSpace, metric: str) -> Tensor:
        """``[G, S, W]`` float64 (``W`` = largest group + 1): the increase at every keep count 0..n,
        linearly interpolated between measured counts, 0 at ``k = n``, constant below the smallest."""
        if metric not in TABLE_METRICS:
            raise PruneSearchError(f"unknown fitness metric '{metric}'; metrics are {', '.join(TABLE_METRICS)}")
        if self.groups != space.names or tuple(self.strategies) != tuple(space.strategies):
            raise PruneSearchError("the fitness table was measured for another search space; create the study again")
        width = max(g.size for g in space.groups) + 1
        table = torch.zeros(len(space), len(space.strategies), width, dtype=torch.float64)
        for g, group in enumerate(space.groups):
            xs, at = [*self.counts[g], group.size], np.arange(group.size + 1)
            for s in range(len(space.strategies)):
                ys = [*self.values[metric][g][s], 0.0]
                table[g, s, : group.size + 1] = torch.from_numpy(np.interp(at, xs, ys))
        return table

    def to_json(self) -> str:
        return json.dumps(
            {
                "groups": self.groups,
                "strategies": self.strategies,
                "counts": self.counts,
                "values": self.values,
                "setup": self.setup,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "FitnessTable":
        data = json.loads(text)
        return cls(data["groups"], data["strategies"], data["counts"], data["values"], data["setup"])


def measure_fitness_table(
    evaluator: AdaptiveBNEvaluator,
    per_group: int,
    setup: dict[str, int],
    on_step: Callable[[], object] | None = None,
) -> FitnessTable:
    """The table of ``evaluator.space`` at up to ``per_group`` keep counts per group and strategy, scored
    by ``evaluator`` (its batches must come from the train split). ``on_step`` is called once per
    measured entry and once for the unpruned model."""
    space = evaluator.space
    counts = measured_counts(space, per_group)
    entries = [(g, s, k) for g in range(len(space)) for s in range(len(space.strategies)) for k in counts[g]]
    base = evaluator.measure(space.full(), on_step)
    scores = evaluator.measure(single_group_candidates(space, entries), on_step) if entries else None
    values: dict[str, list[list[list[float]]]] = {
        metric: [[[] for _ in space.strategies] for _ in space.groups] for metric in TABLE_METRICS
    }
    for row, (g, s, _) in enumerate(entries):
        for metric in TABLE_METRICS:
            values[metric][g][s].append(float(scores[metric][row] - base[metric][0]))
    return FitnessTable(space.names, list(space.strategies), counts, values, setup)
