"""Writing a whole generation of finished trials into Optuna's own tables, in one transaction.

The study row is locked (``SELECT … FOR UPDATE``; SQLite takes its write lock at ``BEGIN
IMMEDIATE``) while trial numbers are assigned, candidates already in the study are dropped
and the batch is cut to the study's target, so concurrent workers never duplicate a trial
number or a candidate and never overshoot the target. The rows are exactly those Optuna
writes for a COMPLETE trial, so Optuna, its CLI and optuna-dashboard read them unchanged.
"""

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine

from prune_search.storage import tables
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


def _insert_ids(conn: Connection, table, rows: list[dict]) -> list[int]:
    if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
        result = conn.execute(insert(table).returning(table.c.trial_id, sort_by_parameter_order=True), rows)
        return [int(i) for i in result.scalars().all()]
    return [int(conn.execute(insert(table), row).inserted_primary_key[0]) for row in rows]


def count_complete(conn: Connection, study_id: int) -> int:
    trials = models.TrialModel.__table__
    return int(
        conn.execute(
            select(func.count())
            .select_from(trials)
            .where(trials.c.study_id == study_id, trials.c.state == TrialState.COMPLETE)
        ).scalar_one()
    )


def persist_generation(
    engine: Engine,
    study_id: int,
    records: list[TrialRecord],
    distributions: dict[str, BaseDistribution],
    *,
    target: int,
    generation: int,
    worker_id: int,
) -> int:
    """Store ``records`` as COMPLETE trials, skipping known candidates, up to ``target`` in all.

    Returns how many trials were added (0 once the study holds ``target`` COMPLETE trials).
    """
    trials = models.TrialModel.__table__
    studies = models.StudyModel.__table__
    dist_json = {name: distribution_to_json(d) for name, d in distributions.items()}

    def write() -> int:
        with engine.begin() as conn:
            conn.execute(select(studies.c.study_id).where(studies.c.study_id == study_id).with_for_update())
            room = target - count_complete(conn, study_id)
            if room <= 0 or not records:
                return 0
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
                return 0
            number = int(
                conn.execute(select(func.count()).select_from(trials).where(trials.c.study_id == study_id)).scalar_one()
            )
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            ids = _insert_ids(
                conn,
                trials,
                [
                    {
                        "number": number + i,
                        "study_id": study_id,
                        "state": TrialState.COMPLETE,
                        "datetime_start": now,
                        "datetime_complete": now,
                    }
                    for i in range(len(fresh))
                ],
            )
            params, values, user_attrs, system_attrs, compact = [], [], [], [], []
            for offset, (trial_id, record) in enumerate(zip(ids, fresh, strict=True)):
                for name, value in record.params.items():
                    params.append(
                        {
                            "trial_id": trial_id,
                            "param_name": name,
                            "param_value": distributions[name].to_internal_repr(value),
                            "distribution_json": dist_json[name],
                        }
                    )
                for objective, value in enumerate(record.values):
                    stored, kind = models.TrialValueModel.value_to_stored_repr(float(value))
                    values.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind})
                for key, value in record.user_attrs.items():
                    user_attrs.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
                for key, value in record.constraints.items():
                    system_attrs.append(
                        {"trial_id": trial_id, "key": f"{CONSTRAINTS_KEY}:{key}", "value_json": json.dumps(value)}
                    )
                compact.append(
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
                )
            conn.execute(insert(models.TrialParamModel.__table__), params)
            conn.execute(insert(models.TrialValueModel.__table__), values)
            if user_attrs:
                conn.execute(insert(models.TrialUserAttributeModel.__table__), user_attrs)
            if system_attrs:
                conn.execute(insert(models.TrialSystemAttributeModel.__table__), system_attrs)
            conn.execute(insert(tables.candidates), compact)
            return len(fresh)

    return with_retry(write)


def read_candidates(engine: Engine, study_id: int, after_id: int = 0) -> list[dict]:
    """Compact rows of the study's trials with row id > ``after_id``, in insertion order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(tables.candidates)
            .where(tables.candidates.c.study_id == study_id, tables.candidates.c.id > after_id)
            .order_by(tables.candidates.c.id)
        )
        return [dict(row._mapping) for row in rows]
