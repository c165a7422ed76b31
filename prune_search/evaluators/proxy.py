"""Training-free proxy fitness of a whole population at once, from cached importance only.

Both proxies are losses (lower is better) computed from per-group tables of cumulative
retained importance along the strategy's keep order (:func:`keep_order`), so a population
``[P, G]`` costs one gather and one sum on the device:

- ``taylor_loss``: Σ over groups of the importance of the removed channels: with Taylor
  importance, the first-order estimate of the loss increase (nats per sample).
- ``retained_fraction``: 1 − mean over groups of (retained importance / group total), the
  seed project's capacity score turned into a loss (a dead group counts k/n).

With the study's measured :class:`FitnessTable` two more (fitness_table.py), each the sum
over groups of a measured one-group-pruned increase, nats per sample:

- ``bn_kl``: KL(unpruned ‖ pruned) of the output distributions after BN recalibration.
- ``bn_loss``: cross-entropy after BN recalibration.
"""

import torch
from torch import Tensor

from prune_search.errors import PruneSearchError
from prune_search.evaluators.fitness_table import FitnessTable
from prune_search.evaluators.importance import Importance
from prune_search.evaluators.selection import keep_order
from prune_search.space import CandidateBatch, PruningSpace

IMPORTANCE_PROXIES = ("taylor_loss", "retained_fraction")
TABLE_PROXIES = ("bn_kl", "bn_loss")
PROXIES = IMPORTANCE_PROXIES + TABLE_PROXIES
_TABLE_METRIC = {"bn_kl": "kl", "bn_loss": "loss"}


class ProxyEvaluator:
    """Scores candidates of ``space`` with ``importance`` (and the measured ``fitness`` table) on ``device``."""

    def __init__(
        self,
        space: PruningSpace,
        importance: Importance,
        device: torch.device | str = "cpu",
        fitness: FitnessTable | None = None,
    ) -> None:
        self.space = space
        self.device = torch.device(device)
        self.available = PROXIES if fitness is not None else IMPORTANCE_PROXIES
        self._measured = {
            proxy: fitness.dense(space, _TABLE_METRIC[proxy]).flatten().to(self.device)
            for proxy in (TABLE_PROXIES if fitness is not None else ())
        }
        vectors = importance.vectors(space)
        width = max(g.size for g in space.groups) + 1
        strategies = len(space.strategies)
        table = torch.zeros(len(space), strategies, width, dtype=torch.float64)
        for g, (group, vector) in enumerate(zip(space.groups, vectors, strict=True)):
            for s, strategy in enumerate(space.strategies):
                order = keep_order(vector, strategy, group.blocks, group.aligned)
                cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), vector[order].cumsum(0)])
                table[g, s, : len(cumulative)] = cumulative
                table[g, s, len(cumulative) :] = cumulative[-1]
        self._table = table.flatten().to(self.device)
        self._width = width
        self._sizes = space.sizes.to(torch.float64).to(self.device)
        self._offsets = (torch.arange(len(space)) * strategies * width).to(self.device)

    def retained(self, batch: CandidateBatch) -> tuple[Tensor, Tensor]:
        """(importance kept, group total) per candidate and group, ``[P, G]`` float64 each."""
        start = self._offsets + batch.strategy.to(self.device) * self._width
        return self._table[start + batch.keep.to(self.device)], self._table[start + self._width - 1]

    def __call__(self, batch: CandidateBatch, proxy: str = "taylor_loss") -> Tensor:
        """Proxy loss per candidate ``[P]`` (float64, lower is better)."""
        if proxy in self._measured:
            start = self._offsets + batch.strategy.to(self.device) * self._width
            return self._measured[proxy][start + batch.keep.to(self.device)].sum(1)
        if proxy in TABLE_PROXIES:
            raise PruneSearchError(f"proxy '{proxy}' needs the study's measured fitness table, which it lacks")
        retained, totals = self.retained(batch)
        if proxy == "taylor_loss":
            return (totals - retained).sum(1)
        if proxy == "retained_fraction":
            keep = batch.keep.to(self.device, torch.float64)
            safe = torch.where(totals > 0, totals, torch.ones_like(totals))
            fraction = torch.where(totals > 0, retained / safe, keep / self._sizes)
            return 1 - fraction.mean(1)
        raise PruneSearchError(f"unknown proxy '{proxy}'; proxies are {', '.join(PROXIES)}")
