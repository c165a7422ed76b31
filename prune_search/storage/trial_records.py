"""Finalize claims: which trial a finalize worker took, and whether a claim's holder still runs.

(Writing to the finished trials themselves, which Optuna's API refuses, is
:mod:`prune_search.storage.optuna_tables`.)
"""

import datetime
import os
import socket

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from prune_search.storage import tables
from prune_search.storage.url import with_retry


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

    return with_retry(write, engine)
