"""Which front trial to finalize: by number, the knee, a budget, or K spread across MACs."""

from collections.abc import Callable
from typing import Any

from prune_search.errors import PruneSearchError
from prune_search.search.config import parse_budget
from prune_search.search.fidelity import multi_fidelity
from prune_search.search.front import knee
from prune_search.search.status import spread
from prune_search.search.study import StudyHandle
from prune_search.search.summary import front_rows, load_archive


def within_budget(
    handle: StudyHandle, rows: list[dict[str, Any]], max_macs: str | None, max_params: str | None
) -> dict[str, Any]:
    """The best-scored front row within the budgets (measured score where the study measured its front, else
    the proxy); a one-line error naming the closest if none fits."""
    return min(fitting_rows(handle, rows, max_macs, max_params), key=lambda r: (r["score"], r["macs"]))


def fitting_rows(
    handle: StudyHandle, rows: list[dict[str, Any]], max_macs: str | None, max_params: str | None
) -> list[dict[str, Any]]:
    """The front rows within the budgets; a one-line error naming the closest if none fits."""
    base = handle.config["base"]
    macs = parse_budget(max_macs, base["macs"], "--max-macs") or float("inf")
    params = parse_budget(max_params, base["params"], "--max-params") or float("inf")
    fitting = [r for r in rows if r["macs"] <= macs and r["params"] <= params]
    if fitting:
        return fitting

    def excess(row: dict[str, Any]) -> float:
        return max(0.0, (row["macs"] - macs) / base["macs"]) + max(0.0, (row["params"] - params) / base["params"])

    closest = min(rows, key=excess)
    raise PruneSearchError(
        f"no front trial meets the budget; the closest is trial {closest['trial']} with "
        f"{closest['macs_pct']:.1f}% MACs and {closest['params_pct']:.1f}% params of the base model"
    )


def choose(
    handle: StudyHandle,
    *,
    trial: int | None = None,
    use_knee: bool = False,
    max_macs: str | None = None,
    max_params: str | None = None,
    front: int | None = None,
    force: bool = False,
    rerank: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
) -> tuple[list[int], list[str]]:
    """Trial numbers to finalize, and warnings to show. Exactly one way of choosing must be given.

    With a budget, ``rerank`` (whole-candidate KL or BN recalibration, :mod:`prune_search.finalize.rerank`)
    picks among the front rows within it instead of the best score; in a multi-fidelity study among the rows of
    the corrected front (every candidate, measured or surrogate-corrected), which is dense near any budget.
    """
    ways = sum([trial is not None, use_knee, max_macs is not None or max_params is not None, front is not None])
    if ways != 1:
        raise PruneSearchError("choose the trial one way: --trial N, --knee, --max-macs/--max-params or --front K")
    archive = load_archive(handle)
    rows = front_rows(handle, archive)
    if not rows and trial is None:
        raise PruneSearchError("the study has no feasible front yet; run 'prune-search start' first")
    if trial is not None:
        numbers = set(archive.numbers.tolist())
        if trial not in numbers:
            raise PruneSearchError(
                f"no trial {trial} in study '{handle.study.study_name}' (it has trials 0..{max(numbers, default=-1)})"
            )
        if trial not in {r["trial"] for r in rows}:
            if not force:
                raise PruneSearchError(
                    f"trial {trial} is not on the feasible Pareto front; pass --force to finalize it anyway"
                )
            return [trial], [f"trial {trial} is not on the feasible Pareto front (finalizing it because of --force)"]
        return [trial], []
    if use_knee:
        return [knee(rows, handle.config["objectives"])["trial"]], []
    if front is not None:
        if front < 1:
            raise PruneSearchError(f"--front must be at least 1, got {front}")
        return [r["trial"] for r in spread(rows, front)], []
    if rerank is not None:
        pool = front_rows(handle, archive, corrected=True) if multi_fidelity(handle) else rows
        return [rerank(fitting_rows(handle, pool, max_macs, max_params))["trial"]], []
    return [within_budget(handle, rows, max_macs, max_params)["trial"]], []
