"""Promotions of a multi-fidelity search: claims and measured scores shared by all workers.

A worker claims candidates (by digest) before measuring them; the study's first worker row is
locked (``SELECT … FOR UPDATE``; SQLite takes its write lock at ``BEGIN IMMEDIATE``) while the
budget of measurements is checked, so concurrent workers never exceed it and never claim one
candidate twice. A claim whose worker died (same host, process gone, or no heartbeat for
:data:`STALE_S`) is taken over by the next claim, so a killed worker loses nothing stored and
leaves nothing unmeasured. Scores are written to the claim row and, as the ``measured`` user
attribute, to the candidate's trial, where Optuna and optuna-dashboard show them.
"""

import datetime
import json
import socket
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine

from prune_search.storage import tables
from prune_search.storage.optuna_tables import set_finished_user_attrs
from prune_search.storage.trial_records import pid_alive
from prune_search.storage.url import with_retry

STALE_S = 900.0
MEASURE = "kl"  # the measured score that ranks candidates (nats per sample, lower is better)
MEASURED_ATTR = "measured"


@dataclass(frozen=True)
class Promotion:
    """A candidate to measure: its digest, trial number and Optuna trial id."""

    digest: str
    number: int
    trial_id: int


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def claim_promotions(
    engine: Engine, study_id: int, worker_id: int, wanted: list[Promotion], budget: int
) -> list[Promotion]:
    """Claim for ``worker_id`` the abandoned claims of dead workers, then those of ``wanted`` that no one
    holds, while the study holds fewer than ``budget`` measurements (done or claimed). Returns the claims."""
    m, w = tables.measurements, tables.workers
    host = socket.gethostname()

    def write() -> list[Promotion]:
        with engine.begin() as conn:
            conn.execute(
                select(w.c.worker_id).where(w.c.study_id == study_id).order_by(w.c.worker_id).limit(1).with_for_update()
            )
            now = _now()
            pending = conn.execute(
                select(m.c.digest, m.c.number, m.c.trial_id, w.c.host, w.c.pid, w.c.last_seen)
                .select_from(m.join(w, m.c.worker_id == w.c.worker_id, isouter=True))
                .where(m.c.study_id == study_id, m.c.scores.is_(None), m.c.worker_id != worker_id)
                .order_by(m.c.number)
            ).all()
            stale = now - datetime.timedelta(seconds=STALE_S)
            taken = [
                Promotion(r.digest, r.number, r.trial_id)
                for r in pending
                if r.host is None or r.last_seen < stale or (r.host == host and not pid_alive(r.pid))
            ]
            for p in taken:
                conn.execute(
                    update(m)
                    .where(m.c.study_id == study_id, m.c.digest == p.digest)
                    .values(worker_id=worker_id, claimed_at=now)
                )
            held = int(conn.execute(select(func.count()).select_from(m).where(m.c.study_id == study_id)).scalar_one())
            known = set(conn.execute(select(m.c.digest).where(m.c.study_id == study_id)).scalars())
            fresh = [p for p in dict.fromkeys(wanted) if p.digest not in known][: max(0, budget - held)]
            if fresh:
                conn.execute(
                    insert(m),
                    [
                        {
                            "study_id": study_id,
                            "digest": p.digest,
                            "number": p.number,
                            "trial_id": p.trial_id,
                            "worker_id": worker_id,
                            "claimed_at": now,
                        }
                        for p in fresh
                    ],
                )
            return taken + fresh

    return with_retry(write, engine)


def record_scores(engine: Engine, study_id: int, promotion: Promotion, scores: dict[str, float]) -> None:
    """Store a claimed candidate's measured scores (and its trial's ``measured`` user attribute)."""
    m = tables.measurements

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(
                update(m)
                .where(m.c.study_id == study_id, m.c.digest == promotion.digest)
                .values(scores=json.dumps(scores))
            )

    set_finished_user_attrs(engine, promotion.trial_id, {MEASURED_ATTR: scores})
    with_retry(write, engine)


def read_scores(engine: Engine, study_id: int) -> dict[str, dict[str, float]]:
    """``{digest: scores}`` of every measured candidate of the study."""
    m = tables.measurements

    def read() -> list:
        with engine.connect() as conn:
            return conn.execute(
                select(m.c.digest, m.c.scores).where(m.c.study_id == study_id, m.c.scores.is_not(None))
            ).all()

    return {r.digest: json.loads(r.scores) for r in with_retry(read, engine)}


def count_claims(engine: Engine, study_id: int) -> int:
    """Measurements of the study, done or claimed."""
    m = tables.measurements

    def read() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(m).where(m.c.study_id == study_id)).scalar_one())

    return with_retry(read, engine)
