"""Multi-fidelity NSGA-II: promotions to the whole-candidate evaluator, and a surrogate that corrects
the fast fitness of every other candidate.

The fast fitness (the proxy, e.g. the fitness-table KL summed over groups) scores every candidate;
each generation a few candidates of the (corrected) front, spread across MACs, are promoted to the
:class:`~prune_search.evaluators.BatchedEvaluator`: KL (nats per sample) of the whole pruned network
to the unpruned one after BatchNorm re-estimation, on the study's fixed train-split sample. A
surrogate fitted on the promoted candidates maps (keep ratio of every group, fast fitness) to the
measured KL; NSGA-II's selection, the front and the final pick use the measured KL where there is
one and the surrogate's estimate elsewhere.
"""

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from prune_search.evaluators import BatchedEvaluator
from prune_search.search.archive import Archive
from prune_search.search.codec import CandidateCodec
from prune_search.search.front import front_indices
from prune_search.search.study import StudyHandle, fitness_batches, open_base
from prune_search.storage.measurements import (
    MEASURE,
    Promotion,
    claim_promotions,
    count_claims,
    read_scores,
    record_scores,
)

if TYPE_CHECKING:
    from prune_search.search.runner import Scorer

FLOOR = 1e-3  # nats added to both fidelities before taking logs
MIN_FIT = 8  # measured candidates before the surrogate uses features (below: one mean offset)
ALPHAS = np.logspace(-2, 3, 11)


class Surrogate:
    """``log(measured + FLOOR) ≈ log(fast + FLOOR) + r(features)``: a ridge regression ``r`` (penalty
    chosen by leave-one-out) on the measured candidates' features ``[N, F]`` (keep ratios and the
    log fast fitness); with fewer than :data:`MIN_FIT` of them ``r`` is their mean residual."""

    def __init__(self, features: np.ndarray, fast: np.ndarray, measured: np.ndarray) -> None:
        residual = np.log(measured + FLOOR) - np.log(np.maximum(fast, 0) + FLOOR)
        self.offset = float(residual.mean()) if len(residual) else 0.0
        self.model = None
        if len(residual) >= MIN_FIT:
            from sklearn.linear_model import RidgeCV  # imported when fitted: a read command never needs it
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(features, residual)

    def __call__(self, features: np.ndarray, fast: np.ndarray) -> np.ndarray:
        """Estimated measured score ``[N]`` of candidates with ``features [N, F]`` and fast fitness ``[N]``."""
        residual = self.model.predict(features) if self.model is not None else np.full(len(fast), self.offset)
        return np.exp(np.log(np.maximum(fast, 0) + FLOOR) + residual) - FLOOR


def features(codec: CandidateCodec, X: np.ndarray, fast: np.ndarray) -> np.ndarray:
    """Surrogate features ``[N, G + 1]`` of individuals ``X [N, 2G]``: each group's keep ratio, and
    log(fast + FLOOR) of their fast fitness ``[N]``."""
    full = codec.table[:, -1].astype(np.float64)
    return np.concatenate([codec.keep(X) / full, np.log(np.maximum(fast, 0) + FLOOR)[:, None]], 1)


def measured_column(archive: Archive, scores: dict[str, dict[str, float]]) -> np.ndarray:
    """The measured score ``[N]`` of every archived candidate (NaN where not measured)."""
    return np.array([scores[k][MEASURE] if k in scores else np.nan for k in archive.keys], dtype=np.float64)


def multi_fidelity(handle: StudyHandle) -> bool:
    """Whether the study measures promoted candidates whole (``start --evaluations N`` with N > 0)."""
    return bool(handle.config.get("evaluations")) and "proxy" in handle.config["objectives"]


def study_surrogate(
    handle: StudyHandle,
    archive: Archive,
    scores: dict[str, dict[str, float]] | None = None,
) -> Surrogate | None:
    """The surrogate fitted on every measured candidate of the study (None: nothing measured, or no proxy).
    ``scores``: ``{digest: scores}``, read from the study when None."""
    if "proxy" not in handle.config["objectives"]:
        return None
    scores = read_scores(handle.engine, handle.study_id) if scores is None else scores
    measured = measured_column(archive, scores)
    done = ~np.isnan(measured)
    if not done.any():
        return None
    fast = archive.F[done, handle.config["objectives"].index("proxy")]
    return Surrogate(features(handle.codec, archive.X[done], fast), fast, measured[done])


def corrected_objectives(
    handle: StudyHandle,
    archive: Archive,
    scores: dict[str, dict[str, float]] | None = None,
) -> np.ndarray:
    """``archive.F [N, M]`` with the proxy column replaced by the measured score where there is one and the
    surrogate's estimate elsewhere (unchanged when nothing is measured). ``scores``: ``{digest: scores}``,
    read from the study when None."""
    scores = read_scores(handle.engine, handle.study_id) if scores is None else scores
    surrogate = study_surrogate(handle, archive, scores)
    if surrogate is None:
        return archive.F
    column = handle.config["objectives"].index("proxy")
    fast = archive.F[:, column]
    measured = measured_column(archive, scores)
    F = archive.F.copy()
    F[:, column] = np.where(np.isnan(measured), surrogate(features(handle.codec, archive.X, fast), fast), measured)
    return F


def promotions_per_generation(evaluations: int, population: int, target: int) -> int:
    """Promotions each generation so that ``evaluations`` are spread over a search of ``target`` trials."""
    return max(1, math.ceil(evaluations * population / max(target, 1)))


class Promoter:
    """A worker's side of the multi-fidelity search: corrected objectives, promotions, measurements.

    ``scorer`` is the worker's :class:`~prune_search.search.runner.Scorer` (costs of genes); the base model
    comes from ``checkpoint`` (default: the study's stored path).
    """

    def __init__(
        self,
        handle: StudyHandle,
        scorer: "Scorer",
        device: torch.device,
        checkpoint: Path | None = None,
        data_root: str | None = None,
    ) -> None:
        self.handle = handle
        self.scorer = scorer
        self.budget = int(handle.config.get("evaluations", 0))
        self.column = handle.config["objectives"].index("proxy")
        model, bundle = (base := open_base(handle, checkpoint, data_root)).model, base.bundle
        self.whole = BatchedEvaluator(
            model.to(device), handle.space, handle.importance, fitness_batches(bundle), device
        )
        self.scores: dict[str, dict[str, float]] = {}

    def corrected(self, archive: Archive) -> np.ndarray:
        """``archive.F`` with the proxy column replaced by the measured score or the surrogate's estimate."""
        self.scores = read_scores(self.handle.engine, self.handle.study_id)
        return corrected_objectives(self.handle, archive, self.scores)

    def promote(self, archive: Archive, worker_id: int, count: int) -> int:
        """Measure up to ``count`` unmeasured candidates of the corrected front, spread across MACs (plus
        any claims a dead worker left); returns how many this worker measured."""
        F = self.corrected(archive)
        front = front_indices(F, archive.violation)
        open_ = np.array([i for i in front if archive.keys[i] not in self.scores], dtype=np.int64)
        wanted: list[Promotion] = []
        count = min(count, self.budget - count_claims(self.handle.engine, self.handle.study_id))
        if len(open_) and count > 0:
            _, macs, _ = self.scorer.measure(archive.X[open_])
            ordered = open_[np.argsort(macs, kind="stable")]
            picks = np.unique(np.linspace(0, len(ordered) - 1, min(count, len(ordered))).round().astype(int))
            wanted = [
                Promotion(archive.keys[i], int(archive.numbers[i]), int(archive.trial_ids[i])) for i in ordered[picks]
            ]
        claims = claim_promotions(self.handle.engine, self.handle.study_id, worker_id, wanted, self.budget)
        if not claims:
            return 0
        where = {key: i for i, key in enumerate(archive.keys)}
        claims = [p for p in claims if p.digest in where]
        rows = np.array([where[p.digest] for p in claims], dtype=np.int64)
        scores = self.whole(self.scorer.codec.batch(archive.X[rows]))
        for j, promotion in enumerate(claims):
            record_scores(
                self.handle.engine,
                self.handle.study_id,
                promotion,
                {name: float(values[j]) for name, values in scores.items()},
            )
        return len(claims)
