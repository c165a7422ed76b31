"""Which trials become levels, and how their widths are made nested.

Rules (one place, used by the command, the API and the tests):

- Levels are the chosen trials sorted by their own MACs (ties: params, trial number);
  level 0 is the smallest.
- Strategy: a group's channel order is :func:`keep_order` of its importance under ONE
  strategy, and every keep count keeps a prefix of that order, so any single strategy nests
  (``median`` included). Where the trials disagree on a group's strategy, that group uses
  ``min`` at every level (a warning names how many groups); elsewhere the trials' own
  strategy is kept.
- Keep counts, ``nest="max"`` (default): level ℓ keeps, per group, the largest keep count of
  the trials of levels 0..ℓ. The smallest level is exactly its trial; a larger level keeps
  at least what its trial keeps, so its MACs/params can exceed the trial's.
  ``nest="min"``: level ℓ keeps the smallest keep count of the trials of levels ℓ..L−1. The
  largest level is exactly its trial; every level fits its trial's MACs/params budget.
- A level whose nested widths equal those of a smaller level (or, with ``min``, a larger one)
  adds nothing and is dropped with a warning; fewer than two distinct levels is an error.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, Importance, keep_order
from prune_search.search.status import spread
from prune_search.search.study import StudyHandle
from prune_search.search.summary import front_rows, load_archive
from prune_search.space import CandidateBatch, PruningSpace

NEST_RULES = ("max", "min")


@dataclass(frozen=True)
class NestedLevels:
    """Nested widths, smallest level first.

    ``trials[ℓ]``: the trial level ℓ comes from; ``candidates``: the nested keep counts
    ``[L, G]`` (non-decreasing down the levels) with one strategy code per group (the same in
    every row); ``macs``/``params`` (int64 ``[L]``): exact analytic counts per sample of the
    nested levels; ``trial_macs``/``trial_params``: those of the trials themselves;
    ``notes``: warnings for the user.
    """

    trials: list[int]
    candidates: CandidateBatch
    macs: Tensor
    params: Tensor
    trial_macs: Tensor
    trial_params: Tensor
    notes: list[str]

    def __len__(self) -> int:
        return len(self.trials)


def parse_trials(text: str) -> list[int]:
    """``"12,40,77"`` → ``[12, 40, 77]``; a one-line error for anything else or a repeated number."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise PruneSearchError(
            f"--trial-numbers takes trial numbers separated by commas, e.g. 12,40,77; got '{text}'"
        ) from None
    if len(set(numbers)) != len(numbers):
        raise PruneSearchError(f"--trial-numbers names a trial twice: '{text}'")
    return numbers


def check_levels(front: int | None, trials: list[int] | None) -> None:
    """One way of choosing at least 2 levels: ``front`` (K front trials) or ``trials`` (their numbers)."""
    if (front is None) == (trials is None):
        raise PruneSearchError(
            "choose the levels one way: --front K (front trials spread across MACs) or --trial-numbers a,b,c"
        )
    count, given = (len(trials), "--trial-numbers names") if trials is not None else (front, "--front is")
    if count is not None and count < 2:
        raise PruneSearchError(f"an elastic model needs at least 2 widths; {given} {count}")


def pick_trials(handle: StudyHandle, front: int | None, trials: list[int] | None) -> list[int]:
    """The chosen trial numbers: ``trials`` as given, or ``front`` front trials spread across MACs."""
    check_levels(front, trials)
    if trials is not None:
        return trials
    assert front is not None
    rows = front_rows(handle)
    if len(rows) < 2:
        raise PruneSearchError(
            f"the study's feasible front holds {len(rows)} trial(s); run 'prune-search start' longer first"
        )
    return [row["trial"] for row in spread(rows, front)]


def trial_candidates(handle: StudyHandle, numbers: list[int]) -> CandidateBatch:
    """The candidates (keep counts and strategy codes) of trials ``numbers``, in that order."""
    return handle.codec.batch(load_archive(handle).genes_of(numbers))


def _strategies(space: PruningSpace, codes: Tensor) -> tuple[Tensor, list[str]]:
    """One strategy code per group ``[G]``: the trials' common one, else ``min``."""
    agree = (codes == codes[:1]).all(0)
    fallback = space.strategies.index("min") if "min" in space.strategies else int(codes[0, 0])
    chosen = torch.where(agree, codes[0], torch.full_like(codes[0], fallback))
    notes = []
    if not bool(agree.all()):
        notes.append(
            f"the trials choose channels with different strategies in {int((~agree).sum())} of {len(space)} "
            "groups; those groups keep their most important channels (min) at every level"
        )
    return chosen, notes


def nest(space: PruningSpace, trials: list[int], candidates: CandidateBatch, rule: str = "max") -> NestedLevels:
    """Nested levels from trials ``trials`` with ``candidates`` (one row each), by ``rule``."""
    if rule not in NEST_RULES:
        raise PruneSearchError(f"--nest must be one of {', '.join(NEST_RULES)}, got '{rule}'")
    if len(trials) < 2:
        raise PruneSearchError(f"an elastic model needs at least 2 widths, got {len(trials)}")
    cost = CostModel(space)
    macs, params = cost(candidates)
    order = sorted(range(len(trials)), key=lambda i: (int(macs[i]), int(params[i]), trials[i]))
    keep = candidates.keep[order]
    keep = torch.cummax(keep, dim=0).values if rule == "max" else torch.cummin(keep.flip(0), dim=0).values.flip(0)
    strategy, notes = _strategies(space, candidates.strategy[order])
    distinct = [0] if rule == "max" else []
    rows = range(1, len(order)) if rule == "max" else range(len(order) - 1)
    for i in rows:
        neighbour = i - 1 if rule == "max" else i + 1
        if torch.equal(keep[i], keep[neighbour]):
            notes.append(
                f"trial {trials[order[i]]} has the same nested widths as trial {trials[order[neighbour]]} "
                f"(--nest {rule}); it is left out"
            )
        else:
            distinct.append(i)
    if rule == "min":
        distinct.append(len(order) - 1)
    if len(distinct) < 2:
        raise PruneSearchError(
            f"the chosen trials nest into a single width (--nest {rule}); choose trials further apart in MACs"
        )
    nested = CandidateBatch(keep[distinct], strategy.repeat(len(distinct), 1))
    space.validate(nested)
    nested_macs, nested_params = cost(nested)
    picked = [order[i] for i in distinct]
    return NestedLevels(
        trials=[trials[i] for i in picked],
        candidates=nested,
        macs=nested_macs,
        params=nested_params,
        trial_macs=macs[picked],
        trial_params=params[picked],
        notes=notes,
    )


def channel_orders(space: PruningSpace, importance: Importance, strategy: Tensor) -> dict[str, Tensor]:
    """Keep-priority order of every group (int64 ``[n]``) under its strategy code ``strategy[g]``."""
    vectors = importance.vectors(space)
    return {
        group.name: keep_order(vector, space.strategies[int(code)], group.blocks, group.aligned)
        for group, vector, code in zip(space.groups, vectors, strategy.tolist(), strict=True)
    }
