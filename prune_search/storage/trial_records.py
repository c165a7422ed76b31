"""Writing to finished trials, which Optuna's API refuses: user attrs, artifacts, finalize claims.

Rows are written in Optuna's own format (``trial_user_attributes``,
``trial_system_attributes`` with ``artifacts:<id>`` keys), so Optuna and optuna-dashboard
read them as if Optuna had written them.
"""

import datetime
import json
import os
import socket
from typing import Any

from optuna.storages._rdb import models
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from prune_search.storage import tables
from prune_search.storage.url import with_retry


def _upsert(engine: Engine, table, trial_id: int, key: str, value: Any) -> None:
    def write() -> None:
        with engine.begin() as conn:
            conn.execute(delete(table).where(table.c.trial_id == trial_id, table.c.key == key))
            conn.execute(insert(table).values(trial_id=trial_id, key=key, value_json=json.dumps(value)))

    with_retry(write)


def set_finished_user_attr(engine: Engine, trial_id: int, key: str, value: Any) -> None:
    """Set a user attribute of a (finished) trial."""
    _upsert(engine, models.TrialUserAttributeModel.__table__, trial_id, key, value)


def attach_artifact(engine: Engine, trial_id: int, artifact_id: str, filename: str, mimetype: str) -> None:
    """Register an artifact already written to the artifact store on a (finished) trial."""
    meta = {"artifact_id": artifact_id, "filename": filename, "mimetype": mimetype, "encoding": None}
    key = f"artifacts:{artifact_id}"
    _upsert(engine, models.TrialSystemAttributeModel.__table__, trial_id, key, json.dumps(meta))  # as Optuna stores it


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(engine: Engine, study_id: int, number: int, out: str) -> bool:
    """Take trial ``number`` for this process to finalize into ``out``; False if another worker holds it.

    A claim whose holder was a process on this host that no longer runs (a killed worker) is
    taken over, so rerunning an interrupted ``finalize --front`` resumes its trials.
    """
    claims = tables.finalize_claims
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    where = (claims.c.study_id == study_id, claims.c.number == number)

    def write() -> bool:
        try:
            with engine.begin() as conn:
                conn.execute(insert(claims).values(study_id=study_id, number=number, out=out, claimed_at=now, **me))
            return True
        except IntegrityError:
            with engine.begin() as conn:
                holder = conn.execute(select(claims.c.host, claims.c.pid).where(*where).with_for_update()).first()
                if holder is None or (holder.host, holder.pid) == (me["host"], me["pid"]):
                    return True
                if holder.host == me["host"] and not pid_alive(holder.pid):
                    conn.execute(update(claims).where(*where).values(out=out, claimed_at=now, **me))
                    return True
            return False

    return with_retry(write)
