"""The search space: one (keep ratio, strategy) gene pair per prunable group."""

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from math import lcm
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from prune_search.errors import PruneSearchError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
from prune_search.space.candidates import CandidateBatch
from prune_search.space.options import STRATEGIES, SpaceOptions, ratio_param, strategy_param
from prune_search.space.structure import Group, Structure


class PruningSpace:
    """Prunable groups of a model and the genes that choose their widths.

    A candidate is a :class:`CandidateBatch` row: keep count and strategy code per group,
    in the order of :attr:`groups`. Optuna params are ``ratio/<group>`` (float on the grid)
    and ``strategy/<group>`` (categorical).
    """

    def __init__(self, structure: Structure, options: SpaceOptions | None = None) -> None:
        self.structure = structure
        self.options = options or SpaceOptions()
        self.options.validate()
        if not structure.groups:
            raise PruneSearchError("the model has no prunable groups (every Conv/Linear is ignored or the classifier)")
        self.groups: list[Group] = structure.groups
        self.sizes = torch.tensor([g.size for g in self.groups], dtype=torch.int64)
        self._steps = torch.tensor(
            [1 if g.heads else lcm(self.options.round_to, g.blocks) for g in self.groups], dtype=torch.float64
        )
        self._floors = torch.tensor(
            [1 if g.heads else min(g.size, -(-self.options.min_keep // g.blocks) * g.blocks) for g in self.groups],
            dtype=torch.float64,
        )
        grid = torch.tensor(self.options.ratios, dtype=torch.float64)
        self._ratio_grid = grid
        self._keep_table = self.keep_counts(grid[:, None].expand(-1, len(self.groups))).T.contiguous()
        unknown = [name for name in self.options.group_min_ratio if name not in self.names]
        if unknown:
            raise PruneSearchError(f"a minimum keep ratio names group '{unknown[0]}', which the model does not have")
        floors = [self.options.group_min_ratio.get(name, self.options.min_ratio) for name in self.names]
        self._min_level = self._reaching(torch.tensor([floors], dtype=torch.float64))[0]

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        example_inputs: Tensor,
        *,
        ignored_layers: Iterable[str] = (),
        min_ratio: float = 0.1,
        ratio_step: float = 0.05,
        round_to: int = 1,
        min_keep: int = 1,
        strategies: Sequence[str] = STRATEGIES,
    ) -> "PruningSpace":
        """Trace ``model`` on ``example_inputs`` (one batch, ``[B, C, H, W]``) and build the space.

        ``ignored_layers``: module names (as in ``model.named_modules()``) whose channels, and every
        channel coupled to them, are never pruned; see :func:`~prune_search.space.trace.trace_structure`.
        """
        options = SpaceOptions(min_ratio, ratio_step, round_to, min_keep, tuple(strategies))
        options.validate()
        from prune_search.space.trace import trace_structure  # torch-pruning: only to trace, not to read a study

        return cls(trace_structure(model, example_inputs, ignored_layers), options)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    @property
    def strategies(self) -> tuple[str, ...]:
        return self.options.strategies

    def __len__(self) -> int:
        return len(self.groups)

    def keep_counts(self, ratios: Tensor) -> Tensor:
        """Keep counts ``[P, G]`` (int64) for ratios ``[P, G]`` in (0, 1]; see :class:`SpaceOptions`."""
        n = self.sizes.to(torch.float64)
        rounded = torch.round(ratios.to(torch.float64) * n / self._steps) * self._steps
        return torch.minimum(n, torch.maximum(self._floors, rounded)).to(torch.int64)

    def level_keep_counts(self) -> Tensor:
        """Keep count of every group at every ratio-grid level, int64 ``[G, R]``."""
        return self._keep_table.clone()

    def _reaching(self, ratios: Tensor) -> Tensor:
        reach = self._keep_table[None] >= self.keep_counts(ratios)[:, :, None]
        return reach.to(torch.int8).argmax(-1)

    def levels_at(self, ratios: Tensor) -> Tensor:
        """Grid levels ``[P, G]`` (int64) for ratios ``[P, G]`` in [0, 1]: per group, the first level
        at or above the group's smallest one whose keep count reaches the decode of the ratio."""
        return torch.maximum(self._reaching(ratios), self._min_level)

    def min_levels(self) -> Tensor:
        """Smallest grid level per group ``[G]`` (0 unless ``group_min_ratio`` raises it)."""
        return self._min_level.clone()

    def floor(self) -> Tensor:
        """Smallest keep count per group ``[G]`` (the decode of its smallest level)."""
        return self._keep_table.gather(1, self._min_level[:, None])[:, 0]

    def full(self, count: int = 1) -> CandidateBatch:
        """``count`` copies of the unpruned candidate (strategy ``min`` or the first one)."""
        return CandidateBatch(self.sizes.repeat(count, 1), torch.zeros(count, len(self), dtype=torch.int64))

    def smallest(self, count: int = 1) -> CandidateBatch:
        """``count`` copies of the candidate with every group at its floor."""
        return CandidateBatch(self.floor().repeat(count, 1), torch.zeros(count, len(self), dtype=torch.int64))

    def sample(self, n: int, seed: int = 0) -> CandidateBatch:
        """``n`` random candidates: strategies uniform; grid levels uniform, then each group's levels
        mapped proportionally onto its allowed ones (the identity for a group without a raised floor)."""
        generator = torch.Generator().manual_seed(seed)
        count = len(self._ratio_grid)
        levels = torch.randint(count, (n, len(self)), generator=generator)
        levels = self._min_level + levels * (count - self._min_level) // count
        strategy = torch.randint(len(self.strategies), (n, len(self)), generator=generator)
        return CandidateBatch(self._keep_table.T.gather(0, levels) if n else levels, strategy)

    def validate(self, batch: CandidateBatch) -> None:
        """Raise a one-line error naming the first group where ``batch`` leaves the space."""
        expected = (len(batch.keep), len(self))
        if batch.keep.shape != expected or batch.strategy.shape != expected or batch.keep.dim() != 2:
            raise PruneSearchError(
                f"candidates must be [P, {len(self)}] keep counts and strategy codes, got "
                f"{list(batch.keep.shape)} and {list(batch.strategy.shape)}"
            )
        keep = batch.keep.cpu()
        allowed = self._keep_table
        inside = (keep[:, :, None] == allowed[None]).any(-1)
        if not bool(inside.all()):
            p, g = (~inside).nonzero()[0].tolist()
            counts = sorted(set(allowed[g].tolist()))
            raise PruneSearchError(
                f"candidate {p} keeps {int(keep[p, g])} of {self.groups[g].size} channels in group "
                f"'{self.groups[g].name}', which no ratio of the space gives ({len(counts)} counts from "
                f"{counts[0]} to {counts[-1]} are allowed)"
            )
        below = keep < self.floor()
        if bool(below.any()):
            p, g = below.nonzero()[0].tolist()
            raise PruneSearchError(
                f"candidate {p} keeps {int(keep[p, g])} of {self.groups[g].size} channels in group "
                f"'{self.groups[g].name}', below its floor of {int(self.floor()[g])}"
            )
        bad = (batch.strategy < 0) | (batch.strategy >= len(self.strategies))
        if bool(bad.any()):
            p, g = bad.nonzero()[0].tolist()
            raise PruneSearchError(
                f"candidate {p} has strategy code {int(batch.strategy[p, g])} in group '{self.groups[g].name}'; "
                f"codes are 0..{len(self.strategies) - 1} for {', '.join(self.strategies)}"
            )

    def distributions(self) -> dict[str, "BaseDistribution"]:
        """Optuna distributions of every gene, ratio and strategy per group."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution  # the space itself needs no Optuna

        out: dict[str, BaseDistribution] = {}
        for name, low in zip(self.names, self._ratio_grid[self._min_level].tolist(), strict=True):
            out[ratio_param(name)] = FloatDistribution(low, 1.0, step=self.options.ratio_step)
            out[strategy_param(name)] = CategoricalDistribution(list(self.strategies))
        return out

    def from_params(self, params: dict[str, Any]) -> CandidateBatch:
        """One candidate from Optuna params (``ratio/<group>``, ``strategy/<group>``)."""
        missing = [k for k in self.distributions() if k not in params]
        if missing:
            raise PruneSearchError(f"params lack '{missing[0]}'; every group needs a ratio and a strategy")
        ratios = torch.tensor([[float(params[ratio_param(n)]) for n in self.names]], dtype=torch.float64)
        low = self._ratio_grid[self._min_level]
        outside = ((ratios < low - 1e-9) | (ratios > 1 + 1e-9))[0]
        if bool(outside.any()):
            g = int(outside.nonzero()[0])
            raise PruneSearchError(
                f"ratios must lie in [{float(low[g]):g}, 1]: group '{self.names[g]}' has {float(ratios[0, g]):g}"
            )
        unknown = [params[strategy_param(n)] for n in self.names if params[strategy_param(n)] not in self.strategies]
        if unknown:
            raise PruneSearchError(f"unknown strategy '{unknown[0]}'; strategies are {', '.join(self.strategies)}")
        strategy = torch.tensor([[self.strategies.index(params[strategy_param(n)]) for n in self.names]])
        return CandidateBatch(self.keep_counts(ratios), strategy)

    def to_params(self, batch: CandidateBatch) -> list[dict[str, Any]]:
        """Optuna params per candidate; a keep count maps to the smallest allowed grid ratio giving it."""
        self.validate(batch)
        first = (batch.keep.cpu()[:, :, None] == self._keep_table[None]).to(torch.int8).argmax(-1)
        first = torch.maximum(first, self._min_level)
        ratios = self._ratio_grid[first]
        rows = []
        for p in range(len(batch)):
            row: dict[str, Any] = {}
            for g, name in enumerate(self.names):
                row[ratio_param(name)] = float(ratios[p, g])
                row[strategy_param(name)] = self.strategies[int(batch.strategy[p, g])]
            rows.append(row)
        return rows

    def describe(self, batch: CandidateBatch, index: int = 0) -> dict[str, dict[str, Any]]:
        """Readable form of one candidate: ``{group: {"keep": k, "size": n, "strategy": s}}``."""
        return {
            g.name: {
                "keep": int(batch.keep[index, i]),
                "size": g.size,
                "strategy": self.strategies[int(batch.strategy[index, i])],
            }
            for i, g in enumerate(self.groups)
        }

    def to_json(self) -> str:
        """The whole space (structure and options) as JSON."""
        return json.dumps({"options": asdict(self.options), "structure": self.structure.to_dict()})

    @classmethod
    def from_json(cls, text: str) -> "PruningSpace":
        data = json.loads(text)
        options = data["options"]
        options["strategies"] = tuple(options["strategies"])
        return cls(Structure.from_dict(data["structure"]), SpaceOptions(**options))
