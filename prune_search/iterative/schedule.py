"""Retention schedules of iterative pruning: the keep count of every group at every step.

A schedule is a pure function of the original group sizes. Keep counts are always in the
original model's terms (channels of the unpruned group that survive), never below a
group's floor ``min(size, min_keep) ≥ 1``, and a step that would change no group is skipped.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prune_search.errors import PruneSearchError


@dataclass(frozen=True)
class ScheduleStep:
    """Step ``t`` of a schedule (1-based; t = 0 is the unpruned model) and its keep counts per group."""

    t: int
    keep: dict[str, int]


def _floor(size: int, min_keep: int) -> int:
    return min(size, min_keep)


def _check(sizes: Mapping[str, int], min_keep: int) -> None:
    if not sizes:
        raise PruneSearchError("the model has no prunable groups to schedule")
    if min_keep < 1:
        raise PruneSearchError(f"--min-keep must be at least 1, got {min_keep}")
    bad = [name for name, size in sizes.items() if size < 1]
    if bad:
        raise PruneSearchError(f"group '{bad[0]}' has no channels")


def geometric_schedule(
    sizes: Mapping[str, int], q: float, *, min_keep: int = 1, max_steps: int | None = None
) -> list[ScheduleStep]:
    """``N_l(t) = max(floor_l, round(h_l · q^t))`` for t = 1, 2, ... (``h_l``: size of group l).

    ``round`` is Python's (half to even). Steps equal to the previous one are skipped; the
    schedule ends when every group sits at its floor, or after ``max_steps`` kept steps.
    With ``h = (256, 64)`` and ``q = 0.8`` this is 205/51, 164/41, 131/33, ... , 2/1, 1/1.
    """
    _check(sizes, min_keep)
    if not 0 < q < 1:
        raise PruneSearchError(f"--q must lie strictly between 0 and 1, got {q}")
    floors = {name: _floor(size, min_keep) for name, size in sizes.items()}
    previous = dict(sizes)
    steps: list[ScheduleStep] = []
    t = 0
    while previous != floors and (max_steps is None or len(steps) < max_steps):
        t += 1
        keep = {name: max(floors[name], round(size * q**t)) for name, size in sizes.items()}
        if keep != previous:
            steps.append(ScheduleStep(t, keep))
            previous = keep
    return steps


def fraction_schedule(sizes: Mapping[str, int], fractions: Sequence[float], *, min_keep: int = 1) -> list[ScheduleStep]:
    """Step t removes ``fractions[t-1]`` of the channels each group still has.

    ``N_l(t) = max(floor_l, round(N_l(t-1) · (1 − f_t)))``, ``N_l(0) = h_l``; steps that change
    nothing (every group already at its floor) are skipped.
    """
    _check(sizes, min_keep)
    if not fractions:
        raise PruneSearchError("--fractions needs at least one fraction, e.g. 0.2,0.2,0.2")
    bad = [f for f in fractions if not 0 < f < 1]
    if bad:
        raise PruneSearchError(f"every fraction must lie strictly between 0 and 1, got {bad[0]}")
    floors = {name: _floor(size, min_keep) for name, size in sizes.items()}
    previous = dict(sizes)
    steps: list[ScheduleStep] = []
    for t, fraction in enumerate(fractions, start=1):
        keep = {name: max(floors[name], round(previous[name] * (1 - fraction))) for name in sizes}
        if keep != previous:
            steps.append(ScheduleStep(t, keep))
            previous = keep
    return steps


def parse_fractions(text: str) -> list[float]:
    """``"0.2,0.2,0.2"`` → ``[0.2, 0.2, 0.2]``, with a one-line error for anything else."""
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise PruneSearchError(f"--fractions must be comma-separated numbers like 0.2,0.2,0.2, got '{text}'") from None
