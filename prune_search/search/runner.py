"""A search worker: generations of NSGA-II evaluated on the device and stored in bulk.

Workers cooperate through the database only: each generation's parents are the survivors
of every trial in the study (all workers'), read incrementally; each worker draws its own
random stream from (seed, its ordinal among the study's workers, generation), and a
candidate already in the study is never evaluated or stored again.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, ProxyEvaluator
from prune_search.search import nsga2
from prune_search.search.archive import Archive, encode_genes
from prune_search.search.codec import CandidateCodec
from prune_search.search.config import KEEP_ATTR
from prune_search.search.fidelity import Promoter, multi_fidelity, promotions_per_generation
from prune_search.search.front import front_hypervolume, merged_front
from prune_search.search.study import StudyHandle
from prune_search.storage.bulk import TrialRecord, complete_trials, persist_generation
from prune_search.storage.study_data import heartbeat, register_worker
from prune_search.storage.url import reported

STALL_LIMIT = 5


@dataclass(frozen=True)
class GenerationReport:
    """What one generation of one worker did, with the worker's view of the study after it: ``archive``
    (every stored trial) and ``front_rows [K]``, the archive rows of the feasible proxy front."""

    generation: int
    added: int
    complete: int
    front: int
    hypervolume: float
    archive: Archive
    front_rows: np.ndarray
    measured: int = 0


class Elite:
    """The archive's ``population`` survivors (NSGA-II's, by rank then crowding) and its feasible front, kept up
    to date from the rows added since the last :meth:`update`: the parents and the front of the whole study at
    a cost that depends on the population and the front, not on the study's size (NSGA-II's elitist
    (μ + λ) selection, the λ being every worker's new rows)."""

    def __init__(self, population: int) -> None:
        self.population = population
        self.survivors = np.zeros(0, dtype=np.int64)
        self.front = np.zeros(0, dtype=np.int64)
        self._seen = 0

    def update(self, archive: Archive) -> None:
        """Take in the archive rows added since the last update."""
        new = np.arange(self._seen, len(archive), dtype=np.int64)
        self._seen = len(archive)
        if len(new) == 0:
            return
        pool = np.concatenate([self.survivors, new])
        self.survivors = pool[nsga2.survivors(archive.F[pool], archive.violation[pool], self.population)]
        self.front = merged_front(archive.F, archive.violation, self.front, new)


class Scorer:
    """Scores individuals on the device (every proxy, MACs, params), and turns them into the study's
    :class:`TrialRecord` s: objectives, constraint violation, Optuna params and user attrs (via ``codec``)."""

    def __init__(self, handle: StudyHandle, device: torch.device) -> None:
        self.config = handle.config
        self.codec = handle.codec
        self.proxy = ProxyEvaluator(handle.space, handle.importance, device, handle.fitness)
        self.cost = CostModel(handle.space, device)

    def measure(self, X: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Every proxy ``{name: [N]}``, MACs ``[N]`` and params ``[N]`` of the individuals ``X [N, 2G]``."""
        batch = self.codec.batch(X)
        proxies = {name: self.proxy(batch, name).cpu().numpy() for name in self.proxy.available}
        macs, params = (t.cpu().numpy() for t in self.cost(batch))
        return proxies, macs, params

    def rows(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Per individual of ``X [N, 2G]``: keep counts and strategies by group name, MACs, params (also in % of
        the base model's) and every proxy ``{name: value}`` (what ``front`` and the report show)."""
        proxies, macs, params = self.measure(X)
        return [
            row | self._costs(i, macs, params) | {"proxy": {name: float(values[i]) for name, values in proxies.items()}}
            for i, row in enumerate(self.codec.rows(X))
        ]

    def _costs(self, i: int, macs: np.ndarray, params: np.ndarray) -> dict[str, Any]:
        base = self.config["base"]
        return {
            "macs": int(macs[i]),
            "params": int(params[i]),
            "macs_pct": round(100.0 * float(macs[i]) / base["macs"], 3),
            "params_pct": round(100.0 * float(params[i]) / base["params"], 3),
        }

    def _stored_attrs(
        self, X: np.ndarray, proxies: dict[str, np.ndarray], macs: np.ndarray, params: np.ndarray
    ) -> list[dict[str, Any]]:
        """A trial's user attrs: only what its params cannot say (:data:`~prune_search.search.config.KEEP_ATTR`,
        the keep counts as text; costs; every proxy as ``proxy_<name>``, 6 significant digits)."""
        return [
            {KEEP_ATTR: keep}
            | self._costs(i, macs, params)
            | {f"proxy_{name}": float(f"{values[i]:.6g}") for name, values in proxies.items()}
            for i, keep in enumerate(self.codec.keep_texts(X))
        ]

    def records(self, X: np.ndarray, generation: int, worker_id: int) -> list[TrialRecord]:
        """The trial records of the individuals ``X [N, 2G]``, made by ``worker_id`` in ``generation``."""
        groups = len(self.codec)
        proxies, macs, params = self.measure(X)
        base = self.config["base"]
        limits = self.config["constraints"]
        columns = {"proxy": proxies[self.config["proxy"]], "macs": macs, "params": params}
        F = np.stack([columns[o] for o in self.config["objectives"]], axis=1).astype(np.float64)
        constraint_columns = {}
        if limits["max_macs"] is not None:
            constraint_columns["macs"] = (macs - limits["max_macs"]) / base["macs"]
        if limits["max_params"] is not None:
            constraint_columns["params"] = (params - limits["max_params"]) / base["params"]
        violation = sum((np.maximum(c, 0) for c in constraint_columns.values()), np.zeros(len(X)))
        attrs = self._stored_attrs(X, proxies, macs, params)
        return [
            TrialRecord(
                digest=dig,
                params=params_i,
                values=F[i].tolist(),
                user_attrs=attrs[i] | {"generation": generation, "worker": worker_id},
                genes=encode_genes(X[i, :groups], X[i, groups:]),
                violation=float(violation[i]),
                constraints={k: float(v[i]) for k, v in constraint_columns.items()},
            )
            for i, (dig, params_i) in enumerate(zip(self.codec.digests(X), self.codec.params(X), strict=True))
        ]


def _initial(codec: CandidateCodec, seeds: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Generation 0: the study's ``seeds [S, 2G]``, uniform-ratio candidates for every grid level and strategy
    (groups below their smallest level raised to it), then random ones."""
    groups, levels, strategies = len(codec), len(codec.grid), len(codec.space.strategies)
    low = codec.min_level
    uniform = [np.concatenate([np.maximum(lv, low), [s] * groups]) for lv in range(levels) for s in range(strategies)]
    rng.shuffle(uniform)
    random = np.concatenate(
        [rng.integers(low, levels, size=(size, groups)), rng.integers(strategies, size=(size, groups))], axis=1
    )
    return np.concatenate([seeds, np.stack(uniform)[: size // 2], random])[:size]


def _offspring(
    archive: Archive,
    codec: CandidateCodec,
    F: np.ndarray,
    chosen: np.ndarray,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``size`` children of the archive rows ``chosen`` (the survivors), ranked by objectives ``F [N, M]``."""
    rank, crowding = nsga2.rank_and_crowding(F[chosen], archive.violation[chosen])
    first = nsga2.tournament(rank, crowding, size, rng)
    second = nsga2.tournament(rank, crowding, size, rng)
    levels, strategies = len(codec.grid), len(codec.space.strategies)
    return nsga2.vary(archive.X[chosen], first, second, levels, strategies, rng, min_level=codec.min_level)


def _unique_new(codec: CandidateCodec, X: np.ndarray, known: set[str]) -> np.ndarray:
    """The canonical rows of ``X [N, 2G]`` that are neither ``known`` nor repeated, in order."""
    X = codec.canonical(X)
    keep, seen = [], set()
    for i, dig in enumerate(codec.digests(X)):
        if dig not in known and dig not in seen:
            seen.add(dig)
            keep.append(i)
    return X[keep]


def run_worker(
    handle: StudyHandle,
    target: int,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_generation: Callable[[GenerationReport], None] | None = None,
    checkpoint: Path | None = None,
    data_root: str | None = None,
) -> int:
    """Add generations until the study holds ``target`` COMPLETE trials; returns trials this worker added.

    In a study with an evaluation budget (``config["evaluations"]`` > 0, objectives with the proxy) each
    generation also promotes candidates to the whole-candidate evaluator (:mod:`~prune_search.search.fidelity`;
    the base model from ``checkpoint``, default the study's stored path, and its data under ``data_root``),
    and the rest of the budget is spent on the corrected front once the target is reached.

    Every read and write of the storage rides out an outage of up to
    :data:`~prune_search.storage.url.RETRY_WINDOW_S`; a longer one (or a read-only or full database) ends
    in a one-line error: what is stored stays, and running the worker again resumes the study.
    """
    with reported(handle.url):
        return _run(handle, target, seed, torch.device(device), on_generation, checkpoint, data_root)


def _run(
    handle: StudyHandle,
    target: int,
    seed: int,
    device: torch.device,
    on_generation: Callable[[GenerationReport], None] | None,
    checkpoint: Path | None,
    data_root: str | None,
) -> int:
    scorer = Scorer(handle, device)
    codec = scorer.codec
    seeds = codec.seeds(handle.config.get("seeds", []))
    promoter = None
    if multi_fidelity(handle):
        promoter = Promoter(handle, scorer, device, checkpoint, data_root)
    worker_id, ordinal = register_worker(handle.engine, handle.study_id)
    archive = Archive(
        handle.engine, handle.study_id, len(codec), len(handle.config["objectives"]), handle.study.study_name
    )
    distributions = handle.space.distributions()
    population = handle.config["population"]
    elite = Elite(population)
    added_total = stalls = 0
    complete = complete_trials(handle.engine, handle.study_id)  # then as each generation's write counted them
    while True:
        archive.refresh()
        elite.update(archive)
        if complete >= target:
            if promoter is not None:
                promoter.promote(archive, worker_id, promoter.budget)
            return added_total
        generation = archive.next_generation()
        rng = np.random.default_rng([seed, ordinal, generation, stalls])
        if len(archive) < population:
            X = _initial(codec, seeds, population, rng)
        elif stalls < 2 and promoter is not None:  # the surrogate re-estimates every row: rank them all
            F = promoter.corrected(archive)
            X = _offspring(archive, codec, F, nsga2.survivors(F, archive.violation, population), population, rng)
        elif stalls < 2:
            X = _offspring(archive, codec, archive.F, elite.survivors, population, rng)
        else:
            X = _initial(codec, seeds, population, rng)[population // 2 :]
        X = _unique_new(codec, X, archive.digests)
        records = scorer.records(X, generation, worker_id) if len(X) else []
        added, complete = persist_generation(
            handle.engine,
            handle.study_id,
            records,
            distributions,
            target=target,
            generation=generation,
            worker_id=worker_id,
        )
        heartbeat(handle.engine, worker_id, added)
        added_total += added
        measured = 0
        if promoter is not None and added:
            archive.refresh()
            measured = promoter.promote(
                archive, worker_id, promotions_per_generation(promoter.budget, population, target)
            )
        stalls = 0 if added else stalls + 1
        if stalls >= STALL_LIMIT:
            raise PruneSearchError(
                f"no new candidates after {STALL_LIMIT} generations: the space holds fewer distinct candidates "
                f"than --trials {target}; lower --trials or refine the ratio grid"
            )
        if on_generation is not None:
            archive.refresh()
            elite.update(archive)
            report = GenerationReport(
                generation,
                added,
                min(complete, target),
                len(elite.front),
                front_hypervolume(archive.F[elite.front], handle.config),
                archive,
                elite.front,
                measured,
            )
            on_generation(report)
