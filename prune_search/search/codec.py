"""One decoding of a space's individuals, shared by the search, the archive and everything reading a study.

An individual has these forms:

- genes ``X [N, 2G]`` (int64): the grid level of every group, then its strategy code (the archive's rows);
- a :class:`~prune_search.space.CandidateBatch`: keep counts and strategy codes ``[N, G]``;
- Optuna params: ``ratio/<group>`` (the level's grid ratio) and ``strategy/<group>`` (the strategy's name);
- a trial row: ``{"keep": {group: k}, "strategy": {group: name}}`` (front rows, the report);
- a stored trial: its Optuna params, and the keep counts as text in the user attr :data:`KEEP_ATTR`
  (``"16 8 32"``, in group order; older studies hold ``keep``/``strategy`` dicts there instead; prune-search
  itself reads stored trials from the compact candidates table, so both load).

Several genes can describe one pruned model (grid levels with equal keep counts; any strategy of a group
kept whole): :meth:`CandidateCodec.canonical` picks one of them and :meth:`CandidateCodec.digests` names it.
"""

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from prune_search.search.config import KEEP_ATTR, keep_counts
from prune_search.space import CandidateBatch, PruningSpace, ratio_param, strategy_param


def digest(keep: np.ndarray, strategies: np.ndarray) -> str:
    """Identity of the pruned model a candidate describes (keep counts ``[G]`` + effective strategies ``[G]``)."""
    return hashlib.sha1(keep.astype(np.int64).tobytes() + strategies.astype(np.int64).tobytes()).hexdigest()


class CandidateCodec:
    """Genes ↔ candidates ↔ Optuna params ↔ trial rows of one :class:`PruningSpace`.

    ``table [G, R]``: keep count of every group at every grid level; ``grid [R]``: the ratio of every level;
    ``min_level [G]``: each group's smallest allowed level.
    """

    def __init__(self, space: PruningSpace) -> None:
        self.space = space
        self.table = space.level_keep_counts().numpy()
        self.grid = np.array(space.options.ratios)
        self.min_level = space.min_levels().numpy()
        groups = len(space)
        self._first_level = np.stack(
            [
                np.maximum(np.argmax(self.table[g] == self.table[g][:, None], axis=1), self.min_level[g])
                for g in range(groups)
            ]
        )
        self._full_levels = np.argmax(self.table == self.table[:, -1:], axis=1)

    def __len__(self) -> int:
        """G, the number of groups (half the genes of an individual)."""
        return len(self.space)

    def keep(self, X: np.ndarray) -> np.ndarray:
        """Keep counts ``[N, G]`` of the individuals ``X [N, 2G]``."""
        groups = len(self)
        return self.table[np.arange(groups), X[:, :groups]]

    def batch(self, X: np.ndarray) -> CandidateBatch:
        """The candidates (keep counts, strategy codes ``[N, G]``) of the individuals ``X [N, 2G]``."""
        groups = len(self)
        return CandidateBatch(torch.from_numpy(self.keep(X)), torch.from_numpy(X[:, groups:].copy()))

    def genes(self, batch: CandidateBatch) -> np.ndarray:
        """Individuals ``[N, 2G]`` of the candidates ``batch``: per group the smallest allowed level giving its
        keep count, and its strategy code (an error names a keep count the space does not allow)."""
        self.space.validate(batch)
        keep = batch.keep.cpu().numpy()
        levels = np.argmax(keep[:, :, None] == self.table[None], axis=-1)
        levels = np.maximum(levels, self.min_level)
        return np.concatenate([levels, batch.strategy.cpu().numpy()], axis=1).astype(np.int64)

    def canonical(self, X: np.ndarray) -> np.ndarray:
        """Individuals ``X [N, 2G]`` with the smallest level giving each keep count, and strategy 0 for full groups."""
        X = X.copy()
        groups = len(self)
        levels = X[:, :groups]
        X[:, :groups] = self._first_level[np.arange(groups), levels]
        X[:, groups:] = np.where(X[:, :groups] == self._full_levels, 0, X[:, groups:])
        return X

    def digests(self, X: np.ndarray) -> list[str]:
        """:func:`digest` of every individual of ``X [N, 2G]`` (equal for equal pruned models once canonical)."""
        keep, groups = self.keep(X), len(self)
        return [digest(keep[i], X[i, groups:]) for i in range(len(X))]

    def params(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Optuna params of every individual of ``X [N, 2G]``: the grid ratio of its level, its strategy name."""
        groups, names, strategies = len(self), self.space.names, self.space.strategies
        out = []
        for row in X:
            params: dict[str, Any] = {}
            for g, name in enumerate(names):
                params[ratio_param(name)] = float(self.grid[row[g]])
                params[strategy_param(name)] = strategies[row[groups + g]]
            out.append(params)
        return out

    def from_params(self, params: Sequence[dict[str, Any]]) -> np.ndarray:
        """Individuals ``[N, 2G]`` of Optuna params (smallest level giving each ratio's keep count)."""
        return self.genes(CandidateBatch.cat([self.space.from_params(p) for p in params]))

    def rows(self, X: np.ndarray) -> list[dict[str, dict[str, Any]]]:
        """``{"keep": {group: k}, "strategy": {group: name}}`` of every individual of ``X [N, 2G]``."""
        groups, names, strategies = len(self), self.space.names, self.space.strategies
        keep = self.keep(X)
        return [
            {
                "keep": {name: int(keep[i, g]) for g, name in enumerate(names)},
                "strategy": {name: strategies[X[i, groups + g]] for g, name in enumerate(names)},
            }
            for i in range(len(X))
        ]

    def keep_texts(self, X: np.ndarray) -> list[str]:
        """The keep counts of every individual of ``X [N, 2G]`` as text, in group order: ``"16 8 32"``."""
        return [" ".join(map(str, row)) for row in self.keep(X).tolist()]

    def keep_of(self, user_attrs: dict[str, Any]) -> dict[str, int]:
        """A stored trial's keep counts by group name, from its user attrs (this version's text or an older
        study's dict)."""
        return keep_counts(user_attrs[KEEP_ATTR], self.space.names)

    def from_rows(self, rows: Sequence[dict[str, Any]]) -> CandidateBatch:
        """The candidates ``[N, G]`` of trial rows (``keep``/``strategy`` dicts keyed by group name)."""
        names, strategies = self.space.names, self.space.strategies
        keep = torch.tensor([[row["keep"][name] for name in names] for row in rows], dtype=torch.int64)
        strategy = torch.tensor(
            [[strategies.index(row["strategy"][name]) for name in names] for row in rows], dtype=torch.int64
        )
        return CandidateBatch(keep.reshape(len(rows), len(names)), strategy.reshape(len(rows), len(names)))

    def seeds(self, seeds: Sequence[dict[str, float]]) -> np.ndarray:
        """Individuals ``[S, 2G]`` of seed candidates given as a keep ratio per group name (1 where absent),
        each at the level :meth:`PruningSpace.levels_at` gives and strategy ``min`` (else the first)."""
        names, strategies = self.space.names, self.space.strategies
        ratios = torch.tensor([[seed.get(name, 1.0) for name in names] for seed in seeds], dtype=torch.float64)
        levels = self.space.levels_at(ratios.reshape(len(seeds), len(names))).numpy()
        codes = np.full_like(levels, strategies.index("min") if "min" in strategies else 0)
        return np.concatenate([levels, codes], axis=1)
