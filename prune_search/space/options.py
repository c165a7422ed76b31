"""How a space's genes decode: the ratio grid, rounding, floors and strategies; the Optuna param names.

Plain data, no torch: reading a stored study's configuration needs only this module.
"""

from dataclasses import dataclass, field

from prune_search.errors import PruneSearchError

STRATEGIES = ("min", "median")


@dataclass(frozen=True)
class SpaceOptions:
    """How ratios decode to keep counts.

    Ratios lie on the grid ``min_ratio, min_ratio + ratio_step, ..., 1``; a ratio ``r`` of a
    group of ``n`` channels keeps ``k = min(n, max(min_keep, round_to·round(r·n / round_to)))``
    channels, so ``k ≥ min(n, min_keep) ≥ 1`` whatever the rounding. A group split into ``b``
    channel blocks (:attr:`Group.blocks`: a grouped convolution's or a GroupNorm's groups) rounds
    to multiples of ``lcm(round_to, b)`` instead, and its floor ``min_keep`` is rounded up to a
    multiple of ``b``, so every keep count is a multiple of ``b``. A group of attention heads
    (:attr:`Group.heads`) keeps ``max(1, round(r·n))`` heads: rounding and floor are for channels.

    ``group_min_ratio`` raises the smallest ratio of the groups it names (e.g. to the
    allocation of a sensitivity scan): such a group's genes start at the first grid level
    whose keep count reaches the decode of its floor ratio.
    """

    min_ratio: float = 0.1
    ratio_step: float = 0.05
    round_to: int = 1
    min_keep: int = 1
    strategies: tuple[str, ...] = STRATEGIES
    group_min_ratio: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        if not 0 < self.min_ratio <= 1:
            raise PruneSearchError(f"min_ratio must be in (0, 1], got {self.min_ratio}")
        if self.ratio_step <= 0:
            raise PruneSearchError(f"ratio_step must be positive, got {self.ratio_step}")
        steps = (1 - self.min_ratio) / self.ratio_step
        if abs(steps - round(steps)) > 1e-6:
            raise PruneSearchError(
                f"1 - min_ratio ({1 - self.min_ratio:g}) must be a multiple of ratio_step ({self.ratio_step:g})"
            )
        if self.round_to < 1 or self.min_keep < 1:
            raise PruneSearchError("round_to and min_keep must be at least 1")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise PruneSearchError(f"unknown strategy {unknown or '(none)'}; strategies are {', '.join(STRATEGIES)}")
        outside = {name: r for name, r in self.group_min_ratio.items() if not 0 < r <= 1}
        if outside:
            name, ratio = next(iter(outside.items()))
            raise PruneSearchError(f"the minimum keep ratio of group '{name}' must be in (0, 1], got {ratio}")

    @property
    def ratios(self) -> list[float]:
        """The ratio grid, ascending, ending at 1."""
        count = round((1 - self.min_ratio) / self.ratio_step)
        return [round(self.min_ratio + i * self.ratio_step, 10) for i in range(count + 1)]


def ratio_param(group: str) -> str:
    return f"ratio/{group}"


def strategy_param(group: str) -> str:
    return f"strategy/{group}"
