"""Picking among the front trials within a budget (``finalize --pick``), beyond the best proxy.

The proxy is computed once on the unpruned model; the re-rankers look at each candidate itself:
``bn`` by val accuracy after BatchNorm recalibration (EagleEye's adaptive BN, no training), ``kl`` by the
whole-candidate KL with BatchNorm re-estimated (no training), ``trained`` by successive halving of short KD
fine-tunes over the front trials and the references stored as trials: uniform, our group-normalised global
ranking and Torch-Pruning's global Taylor pruning (the default: ``benchmarks/results/fmnist_quality.md`` and
the README's "What the evidence says").
"""

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from prune_search.data import DatasetBundle
from prune_search.errors import PruneSearchError
from prune_search.evaluators import AdaptiveBNEvaluator, BatchedEvaluator
from prune_search.evaluators.trained import TrainedEvaluator
from prune_search.finalize.global_pruning import GLOBAL_PRUNERS, global_pruning_candidate, taylor_batches
from prune_search.search.baselines import baseline
from prune_search.search.config import parse_budget
from prune_search.search.fidelity import multi_fidelity
from prune_search.search.references import stored_rows
from prune_search.search.study import StudyHandle, fitness_batches
from prune_search.space import CandidateBatch

RERANKED = 16  # front trials with the most MACs within the budget that are re-ranked
CALIBRATION_BATCHES = 8  # train batches of 128 re-estimating the BN statistics
VAL_BATCHES = 4  # val batches of 128 scoring each candidate


def nearest(fitting: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The :data:`RERANKED` rows of ``fitting`` with the most MACs, by MACs descending."""
    return sorted(fitting, key=lambda r: -r["macs"])[:RERANKED]


def bn_rerank(
    handle: StudyHandle, fitting: list[dict[str, Any]], model: nn.Module, bundle: DatasetBundle, device: torch.device
) -> tuple[dict[str, Any], float]:
    """Of the :data:`RERANKED` rows of ``fitting`` with the most MACs, the best by BN-recalibrated val accuracy.

    ``model`` is the study's base model (unchanged); returns the row and its accuracy in [0, 1].
    """
    rows = nearest(fitting)
    batch = handle.codec.from_rows(rows)
    calibration = [b for _, b in zip(range(CALIBRATION_BATCHES), bundle.loader("train", 128), strict=False)]
    validation = [b for _, b in zip(range(VAL_BATCHES), bundle.loader("val", 128), strict=False)]
    evaluator = AdaptiveBNEvaluator(model, handle.space, handle.importance, calibration, validation, device)
    scores = evaluator(batch)
    best = int(scores.argmax())
    return rows[best], float(scores[best])


def kl_rerank(
    handle: StudyHandle, fitting: list[dict[str, Any]], model: nn.Module, bundle: DatasetBundle, device: torch.device
) -> tuple[dict[str, Any], float]:
    """Of the :data:`RERANKED` rows of ``fitting`` with the most MACs, the one whose whole network is closest
    to the unpruned model: least KL (nats per sample) with BN re-estimated, on the study's train-split fitness
    sample (:class:`BatchedEvaluator`; val is not used). Returns the row and its KL."""
    rows = nearest(fitting)
    batch = handle.codec.from_rows(rows)
    evaluator = BatchedEvaluator(model, handle.space, handle.importance, fitness_batches(bundle), device)
    scores = evaluator(batch)["kl"]
    best = int(scores.argmin())
    return rows[best], float(scores[best])


PICKS = ("auto", "trained", "bn", "kl", "best")
AUTO_PICK = "trained"  # what --pick auto means outside multi-fidelity studies (README: the evidence)
REFERENCES = ("uniform", "global_mean", "tp_global_taylor")  # stored as trials, added to the trained pick's pool
TRAINED_RUNGS = (40, 120, 360)  # KD steps of each successive-halving rung
TRAINED_KEEP = 3  # each rung keeps the best third (rounded up) for the next
TRAINED_BATCH = 64  # images per KD step
TRAINED_POOL_BATCHES = 128  # train batches the KD steps cycle through (8,192 images)
HELD_OUT_BATCHES = 16  # train batches held out to score (1,024 images)
TRAINED_SEED = 20261201
INCUMBENT = "uniform"  # with a margin, the reference the trained pick keeps unless the winner beats it clearly
SWITCH_MARGIN = 0.0  # ... by a KL at least this share below the incumbent's after the same KD steps; 0: off (README)


def pick_method(pick: str, handle: StudyHandle) -> str:
    """The budget pick ``pick`` names (one of :data:`PICKS`); ``auto``: ``kl`` in a multi-fidelity study, else
    :data:`AUTO_PICK`. An unknown name is a one-line error."""
    if pick not in PICKS:
        raise PruneSearchError(f"unknown --pick '{pick}'; choose one of {', '.join(PICKS)}")
    if pick != "auto":
        return pick
    return "kl" if multi_fidelity(handle) else AUTO_PICK


def reference_candidate(
    handle: StudyHandle, name: str, max_macs: int, model: nn.Module, bundle: DatasetBundle
) -> CandidateBatch:
    """The reference ``name`` (one of :data:`REFERENCES`) with the most MACs ≤ ``max_macs`` (per sample): a
    baseline of the study's space, or Torch-Pruning's global pruning of the base ``model`` (its Taylor
    gradients from ``bundle``'s train split)."""
    if name in GLOBAL_PRUNERS:
        return global_pruning_candidate(handle.space, model, taylor_batches(bundle), name, max_macs)
    return baseline(handle.space, handle.importance, name, max_macs)


def reference_rows(
    handle: StudyHandle,
    max_macs: str | None,
    max_params: str | None,
    model: nn.Module,
    bundle: DatasetBundle,
    device: torch.device,
) -> dict[str, dict[str, Any]]:
    """Each of the :data:`REFERENCES` with the most MACs within ``max_macs`` (none without a MACs budget) and
    its trial row, stored as trials of the study (:func:`~prune_search.search.references.stored_rows`), those
    within ``max_params`` too, in :data:`REFERENCES` order. A global pruner that cannot reach the budget (it
    keeps groups whole) or fails on the model is left out, with a warning. ``model`` is the study's base model
    (unchanged)."""
    base = handle.config["base"]
    macs = parse_budget(max_macs, base["macs"], "--max-macs")
    if macs is None:
        return {}
    params = parse_budget(max_params, base["params"], "--max-params") or float("inf")
    found = {}
    for name in REFERENCES:
        if name not in GLOBAL_PRUNERS:
            found[name] = reference_candidate(handle, name, macs, model, bundle)
            continue
        try:
            found[name] = reference_candidate(handle, name, macs, model, bundle)
        except Exception as error:  # a third-party tracer on a user's model: the pool goes on without it
            warnings.warn(f"{name} left out of the pick's pool: {error}", stacklevel=2)
    rows = stored_rows(handle, CandidateBatch.cat(list(found.values())), device)
    return {name: row for name, row in zip(found, rows, strict=True) if row["params"] <= params}


def trained_batches(bundle: DatasetBundle) -> tuple[list, list]:
    """(KD pool, held-out) batches of :data:`TRAINED_BATCH`: disjoint, fixed, both from the TRAIN split."""
    loader = bundle.loader("train", TRAINED_BATCH, shuffle=True, seed=TRAINED_SEED)
    batches = [b for _, b in zip(range(HELD_OUT_BATCHES + TRAINED_POOL_BATCHES), loader, strict=False)]
    return batches[HELD_OUT_BATCHES:], batches[:HELD_OUT_BATCHES]


def trained_pool(fitting: list[dict[str, Any]], references: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trained pick's candidates: the :func:`nearest` rows of ``fitting`` and the ``references`` rows, each
    trial once, in that order."""
    return list({row["trial"]: row for row in [*nearest(fitting), *references]}.values())


class TrainedPick(NamedTuple):
    """The trained pick: its row, its KL (nats per sample) after the last rung's KD steps, every rung's standings,
    ``[{"steps": S, "kl": {trial: KL}}]`` with each rung's candidates in rank order (best first), the references
    in the pool, ``{trial: name}``, and, where the halving winner is not the incumbent, the margin check:
    ``{"steps", "leader", "leader_kl", "incumbent", "incumbent_kl", "margin", "kept"}`` (``kept``: the incumbent
    stays the pick, the winner's KL not ``margin`` below its own), and the halving winner's row (the pick unless
    the incumbent stayed)."""

    row: dict[str, Any]
    kl: float
    rungs: list[dict[str, Any]]
    names: dict[int, str]
    check: dict[str, Any] | None = None
    winner: dict[str, Any] | None = None

    def labelled_rungs(self) -> list[dict[str, Any]]:
        """Every rung's standings as ``{"steps": S, "kl": [[trial, "front" or the reference's name, KL]]}``,
        best first (the picks file of ``compare``)."""
        return [
            {"steps": r["steps"], "kl": [[t, self.names.get(t, "front"), kl] for t, kl in r["kl"].items()]}
            for r in self.rungs
        ]


def successive_halving(
    members: int,
    rungs: Sequence[int],
    score: Callable[[list[int], int], Sequence[float]],
    on_rung: Callable[[int, int, int], None] | None = None,
) -> tuple[int, float, list[tuple[int, list[tuple[int, float]]]]]:
    """Successive halving over ``members`` candidates (indices): at each rung ``steps`` of ``rungs``,
    ``score(alive, steps)`` scores the candidates still alive (lower is better) and the best
    :data:`TRAINED_KEEP`-th (rounded up) go on; it stops early once one is left. Returns the winner, its last
    score and each rung run as ``(steps, [(member, score)] best first)``. ``on_rung(rung, candidates, steps)``
    reports progress."""
    ranked = [(float("nan"), i) for i in range(members)]
    standings = []
    for rung, steps in enumerate(rungs):
        alive = [i for _, i in ranked]
        if rung and len(alive) == 1:
            break
        if on_rung is not None:
            on_rung(rung, len(alive), steps)
        scored = sorted(zip(score(alive, steps), alive, strict=True))
        standings.append((steps, [(i, value) for value, i in scored]))
        ranked = scored[: -(-len(alive) // TRAINED_KEEP)]
    best_score, best = ranked[0]
    return best, best_score, standings


def trained_rerank(
    handle: StudyHandle,
    fitting: list[dict[str, Any]],
    model: nn.Module,
    bundle: DatasetBundle,
    device: torch.device,
    references: dict[str, dict[str, Any]] | None = None,
    on_rung: Callable[[int, int, int], None] | None = None,
    margin: float = SWITCH_MARGIN,
) -> TrainedPick:
    """Successive halving by short KD fine-tunes: of the :data:`RERANKED` rows of ``fitting`` with the most MACs
    and the ``references`` rows by name (e.g. ``{"uniform": row}``, stored as trials), every candidate is
    fine-tuned for :data:`TRAINED_RUNGS` [0] steps and scored by KL (nats per sample) to the unpruned model on
    held-out train images (:class:`TrainedEvaluator`); the best third go on to the next rung's longer run.
    The winner of the last rung is the pick unless the :data:`INCUMBENT` reference is in the pool and scores a
    KL less than ``1 / (1 - margin)`` times the winner's after the same steps (scored for it if it left
    earlier): then the incumbent stays (``margin`` 0: always the winner). Returns the pick, its KL, every rung's
    standings (by trial number) and the margin check. ``on_rung(rung, candidates, steps)`` reports progress."""
    references = references or {}
    pool = trained_pool(fitting, list(references.values()))
    codec = handle.codec
    train, held_out = trained_batches(bundle)
    evaluator = TrainedEvaluator(model, handle.space, handle.importance, train, held_out, device)

    def kl(alive: list[int], steps: int) -> list[float]:
        return evaluator(codec.from_rows([pool[i] for i in alive]), steps)["kl"].tolist()

    best, best_kl, standings = successive_halving(len(pool), TRAINED_RUNGS, kl, on_rung)
    rungs = [{"steps": steps, "kl": {pool[i]["trial"]: value for i, value in ranked}} for steps, ranked in standings]
    names = {row["trial"]: name for name, row in references.items()}
    incumbent = references.get(INCUMBENT)
    if incumbent is None or incumbent["trial"] == pool[best]["trial"]:
        return TrainedPick(pool[best], best_kl, rungs, names, None, pool[best])
    member = next(i for i, row in enumerate(pool) if row["trial"] == incumbent["trial"])
    steps, ranked = standings[-1]
    incumbent_kl = dict(ranked).get(member)
    if incumbent_kl is None:
        incumbent_kl = kl([member], steps)[0]
    kept = margin > 0 and best_kl > (1 - margin) * incumbent_kl
    check = {
        "steps": steps,
        "leader": pool[best]["trial"],
        "leader_kl": best_kl,
        "incumbent": incumbent["trial"],
        "incumbent_kl": incumbent_kl,
        "margin": margin,
        "kept": kept,
    }
    if kept:
        return TrainedPick(pool[member], incumbent_kl, rungs, names, check, pool[best])
    return TrainedPick(pool[best], best_kl, rungs, names, check, pool[best])


def standings_text(pick: TrainedPick) -> str:
    """The last rung's standings on one line, the references named, where each reference that did not reach it
    left and the margin check: ``KL after 360 KD steps: trial 12 0.0248, trial 7 0.0251; uniform (trial 3) left
    after 40 steps, 0.1120, 9 of 19; trial 12's KL after 360 steps is 9% below uniform (trial 3)'s 0.0273: uniform
    stays the pick (a switch needs 35% below)``."""

    names = pick.names

    def label(trial: int) -> str:
        return f"{names[trial]} (trial {trial})" if trial in names else f"trial {trial}"

    last = pick.rungs[-1]
    text = f"KL after {last['steps']} KD steps: " + ", ".join(
        f"{label(trial)} {value:.4f}" for trial, value in last["kl"].items()
    )
    left = []
    for trial in names:
        reached = [rung for rung in pick.rungs if trial in rung["kl"]]
        if reached and trial not in last["kl"]:
            rung = reached[-1]
            rank = list(rung["kl"]).index(trial) + 1
            left.append(
                f"{label(trial)} left after {rung['steps']} steps, {rung['kl'][trial]:.4f}, {rank} of {len(rung['kl'])}"
            )
    check = pick.check
    if check is not None:
        ratio = 1 - check["leader_kl"] / check["incumbent_kl"]
        line = (
            f"trial {check['leader']}'s KL after {check['steps']} steps is {abs(ratio):.0%} "
            f"{'below' if ratio >= 0 else 'above'} {label(check['incumbent'])}'s {check['incumbent_kl']:.4f}"
        )
        if check["margin"] > 0:
            verdict = f"{names[check['incumbent']]} stays the pick" if check["kept"] else "the winner is the pick"
            line += f": {verdict} (a switch needs {check['margin']:.0%} below)"
        left.append(line)
    return "; ".join([text, *left])
