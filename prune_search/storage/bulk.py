"""Writing a whole generation of finished trials into the study, in one transaction.

The study row is locked (``SELECT … FOR UPDATE``; SQLite takes its write lock at ``BEGIN
IMMEDIATE``) while trial numbers are assigned, candidates already in the study are dropped
and the batch is cut to the study's target, so concurrent workers never duplicate a trial
number or a candidate and never overshoot the target. The trials go into Optuna's own tables
as Optuna writes them (:mod:`prune_search.storage.optuna_tables`), so Optuna, its CLI and
optuna-dashboard read them unchanged, with one compact row each in the project's candidates table.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine, Row

from prune_search.storage import tables
from prune_search.storage.optuna_tables import (
    CompleteTrial,
    count_by_state,
    count_complete,
    count_trials,
    insert_complete_trials,
    lock_study,
)
from prune_search.storage.url import with_retry

CONSTRAINTS_KEY = "constraints"


@dataclass
class TrialRecord:
    """One evaluated candidate, ready to be stored as a COMPLETE trial."""

    digest: str
    params: dict[str, Any]
    values: list[float]
    user_attrs: dict[str, Any]
    genes: str
    violation: float
    constraints: dict[str, float] = field(default_factory=dict)


def persist_generation(
    engine: Engine,
    study_id: int,
    records: list[TrialRecord],
    distributions: dict[str, BaseDistribution],
    *,
    target: int,
    generation: int,
    worker_id: int,
) -> tuple[int, int]:
    """Store ``records`` as COMPLETE trials, skipping known candidates, up to ``target`` in all.

    Returns how many trials were added (0 once the study holds ``target`` COMPLETE trials) and how many
    COMPLETE trials the study holds after them.
    """

    def write() -> tuple[int, int]:
        with engine.begin() as conn:
            lock_study(conn, study_id)
            number = count_trials(conn, study_id)
            held = _count_complete(conn, study_id, number)
            room = target - held
            if room <= 0 or not records:
                return 0, held
            known = set(
                conn.execute(
                    select(tables.candidates.c.digest).where(
                        tables.candidates.c.study_id == study_id,
                        tables.candidates.c.digest.in_([r.digest for r in records]),
                    )
                ).scalars()
            )
            fresh = [r for r in records if r.digest not in known][:room]
            if not fresh:
                return 0, held
            trials = [
                CompleteTrial(
                    r.params,
                    r.values,
                    r.user_attrs,
                    {f"{CONSTRAINTS_KEY}:{key}": value for key, value in r.constraints.items()},
                )
                for r in fresh
            ]
            ids = insert_complete_trials(conn, study_id, number, trials, distributions)
            compact = [
                {
                    "study_id": study_id,
                    "trial_id": trial_id,
                    "number": number + offset,
                    "digest": record.digest,
                    "genes": record.genes,
                    "objectives": json.dumps(record.values),
                    "violation": record.violation,
                    "generation": generation,
                    "worker_id": worker_id,
                }
                for offset, (trial_id, record) in enumerate(zip(ids, fresh, strict=True))
            ]
            conn.execute(insert(tables.candidates), compact)
            return len(fresh), held + len(fresh)

    return with_retry(write, engine)


def _count_complete(conn: Connection, study_id: int, trials: int) -> int:
    """COMPLETE trials of a study that holds ``trials`` trials: the rows of the candidates table when there are
    as many (every trial is one of ours, all COMPLETE: two counts on indexes alone, cheap at any size), else
    counted in Optuna's table."""
    ours = conn.execute(
        select(func.count()).select_from(tables.candidates).where(tables.candidates.c.study_id == study_id)
    ).scalar_one()
    return int(ours) if ours == trials else count_complete(conn, study_id)


def read_candidates(engine: Engine, study_id: int, after_id: int = 0, limit: int | None = None) -> list[Row]:
    """Compact rows of the study's trials with row id > ``after_id``, in insertion order, at most ``limit`` of
    them (rows with the candidates table's columns as attributes: ``id``, ``trial_id``, ``number``, ``digest``,
    ``genes``, ...)."""

    def read() -> list[Row]:
        with engine.connect() as conn:
            return conn.execute(
                select(tables.candidates)
                .where(tables.candidates.c.study_id == study_id, tables.candidates.c.id > after_id)
                .order_by(tables.candidates.c.id)
                .limit(limit)
            ).all()

    return with_retry(read, engine)


def trial_states(engine: Engine, study_id: int) -> dict[str, int]:
    """``{state name: trials}`` of the study, counted by the database (with retries)."""

    def read() -> dict[str, int]:
        with engine.connect() as conn:
            return count_by_state(conn, study_id)

    return with_retry(read, engine)


def complete_trials(engine: Engine, study_id: int) -> int:
    """COMPLETE trials of the study (read with the retries of :func:`~prune_search.storage.url.with_retry`)."""

    def read() -> int:
        with engine.connect() as conn:
            return count_complete(conn, study_id)

    return with_retry(read, engine)
