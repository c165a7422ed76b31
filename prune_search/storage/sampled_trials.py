"""A large study's trials as a dashboard can show them: its Pareto front, an even sample by trial number and
every trial added since, read from the database once each.

optuna-dashboard sends a study's every trial to the browser, which ranks them again in JavaScript (every trial
against every other); at 100,000 trials that answer is ≈ 750 MB of JSON built from ≈ 8 GB of Python objects,
and no browser tab survives it. :class:`SampledStorage` is Optuna's cached storage with one difference: a study
of more than ``limit`` trials, when first read, is read as its :class:`TrialSample` instead of whole, and from
then on every new trial is added as Optuna's cache adds it. The trials read stay a stable prefix of what a
later read returns, as optuna-dashboard's page expects (it asks for the trials after the ones it holds).
"""

import threading
from dataclasses import dataclass

import numpy as np
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.study import StudyDirection

from prune_search.search.front import front_indices
from prune_search.storage.optuna_tables import IndexedTrial, read_trials, trial_index


@dataclass(frozen=True)
class TrialSample:
    """What a dashboard shows of a large study: ``trial_ids`` (Optuna's ids) chosen among the ``total`` trials
    stored when it was chosen, plus every trial with an id above ``cutoff`` (the last id stored then)."""

    trial_ids: frozenset[int]
    cutoff: int
    total: int
    front: int


def choose_sample(trials: list[IndexedTrial], directions: list[StudyDirection], limit: int) -> TrialSample | None:
    """None when ``trials`` (a study's, by number) are at most ``limit``; else its Pareto front (COMPLETE trials
    that no other dominates, every one of them even past ``limit``), its unfinished trials, and as many more as
    ``limit`` leaves room for, evenly spaced by trial number (the first and the last among them)."""
    if len(trials) <= limit:
        return None
    complete = [i for i, t in enumerate(trials) if t.values is not None]
    sign = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions])
    values = np.array([trials[i].values for i in complete], dtype=np.float64).reshape(len(complete), len(sign))
    front = {complete[i] for i in front_indices(values * sign, np.zeros(len(complete)))}
    chosen = front | {i for i, t in enumerate(trials) if not t.state.is_finished()}
    rest = np.array([i for i in range(len(trials)) if i not in chosen], dtype=np.int64)
    room = max(0, limit - len(chosen))
    if room and len(rest):
        chosen |= set(rest[np.unique(np.linspace(0, len(rest) - 1, min(room, len(rest))).round().astype(np.int64))])
    return TrialSample(
        trial_ids=frozenset(trials[i].trial_id for i in chosen),
        cutoff=max(t.trial_id for t in trials),
        total=len(trials),
        front=len(front),
    )


class SampledStorage(_CachedStorage):
    """Optuna's cached storage over ``backend`` that reads a study of more than ``limit`` trials as its
    :class:`TrialSample`. ``samples`` (study id → sample, None for a study read whole) is kept by the caller
    across storages, so that a fresh storage (after a write to a finished trial) shows the same trials."""

    def __init__(self, backend: RDBStorage, limit: int, samples: dict[int, TrialSample | None]) -> None:
        super().__init__(backend)
        self._limit, self._samples = limit, samples
        self._first_read = threading.Lock()

    def sample(self, study_id: int) -> TrialSample | None:
        """The study's sample, chosen on first use (one read of every trial's id, number, state and values)."""
        if study_id not in self._samples:
            directions = self._backend.get_study_directions(study_id)
            index = trial_index(self._backend.engine, study_id, len(directions))
            self._samples[study_id] = choose_sample(index, directions, self._limit)
        return self._samples[study_id]

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        with self._first_read:
            if study_id not in self._studies:
                sample = self.sample(study_id)
                if sample is not None:
                    self._read_sample(study_id, sample)
        super()._read_trials_from_remote_storage(study_id)

    def _read_sample(self, study_id: int, sample: TrialSample) -> None:
        """Cache the sample's trials, and mark the study read up to the sample's cutoff: Optuna's cache then reads
        the sample's unfinished trials and every later one, as it does after reading a study whole."""
        trials = read_trials(self._backend.engine, sorted(sample.trial_ids))
        with self._lock:
            study = self._studies.setdefault(study_id, _StudyInfo())
            self._add_trials_to_cache(study_id, list(trials.values()))
            study.unfinished_trial_ids |= {i for i, t in trials.items() if not t.state.is_finished()}
            study.last_finished_trial_id = sample.cutoff
