"""Study-wide data and worker registrations in the project's tables."""

import datetime
import os
import socket
import uuid

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from prune_search.storage import tables
from prune_search.storage.url import with_retry

WRITE_CHECK_KEY = "prune-search write check"
REVISION_KEY = "finished trials revision"
"""Study data key of a token that changes whenever a finished trial of the study is written to (readers that
cache finished trials, such as ``prune-search dashboard``, watch it)."""


def ensure_tables(engine: Engine) -> None:
    """Create the project's tables where missing (idempotent, safe with concurrent workers)."""
    with_retry(lambda: tables.metadata.create_all(engine, checkfirst=True), engine)


def put_data(engine: Engine, study_id: int, key: str, value: str) -> None:
    """Store ``value`` under ``key`` for the study (first writer wins; values never change)."""

    def write() -> None:
        with engine.begin() as conn:
            found = conn.execute(
                select(tables.study_data.c.key).where(
                    tables.study_data.c.study_id == study_id, tables.study_data.c.key == key
                )
            ).first()
            if found is None:
                conn.execute(insert(tables.study_data).values(study_id=study_id, key=key, value=value))

    with_retry(write, engine)


def _set_value(conn: Connection, study_id: int, key: str, value: str) -> None:
    """Set ``key`` of the study to ``value`` in ``conn``'s transaction, inserting the row where missing (a
    writer that inserted it meanwhile is overwritten: this one is the later)."""
    where = (tables.study_data.c.study_id == study_id) & (tables.study_data.c.key == key)
    if conn.execute(update(tables.study_data).where(where).values(value=value)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(tables.study_data).values(study_id=study_id, key=key, value=value))
    except IntegrityError:
        conn.execute(update(tables.study_data).where(where).values(value=value))


def replace_data(engine: Engine, study_id: int, key: str, value: str) -> None:
    """Store ``value`` under ``key`` for the study, replacing what was there (a result that a later run
    supersedes, such as ``validate-proxy``'s; the study's own definition goes through :func:`put_data`)."""

    def write() -> None:
        with engine.begin() as conn:
            _set_value(conn, study_id, key, value)

    with_retry(write, engine)


def touch_revision(conn: Connection, study_id: int) -> None:
    """Give the study a new :data:`REVISION_KEY` token, in ``conn``'s transaction (the one that writes to one of
    its finished trials)."""
    _set_value(conn, study_id, REVISION_KEY, uuid.uuid4().hex)


def revisions(engine: Engine) -> dict[int, str]:
    """``{study id: token}`` of :data:`REVISION_KEY`, for every study of the database that has one."""

    def read() -> dict[int, str]:
        with engine.connect() as conn:
            rows = conn.execute(
                select(tables.study_data.c.study_id, tables.study_data.c.value).where(
                    tables.study_data.c.key == REVISION_KEY
                )
            )
            return {int(study_id): value for study_id, value in rows}

    return with_retry(read, engine)


def drop_data(engine: Engine, study_id: int) -> None:
    """Remove everything stored for the study (a study whose creation failed, before it is deleted)."""

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(delete(tables.study_data).where(tables.study_data.c.study_id == study_id))

    with_retry(write, engine)


def get_data(engine: Engine, study_id: int, key: str) -> str | None:
    """The value stored under ``key`` for the study, or None."""

    def read() -> str | None:
        with engine.connect() as conn:
            return conn.execute(
                select(tables.study_data.c.value).where(
                    tables.study_data.c.study_id == study_id, tables.study_data.c.key == key
                )
            ).scalar()

    return with_retry(read, engine)


def check_writable(engine: Engine, study_id: int) -> None:
    """A one-line error (:func:`~prune_search.storage.url.storage_error`) if the database refuses writes
    (a read-only file or database, a full disk): a row is written and rolled back, so nothing changes."""

    def write() -> None:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                conn.execute(insert(tables.study_data).values(study_id=study_id, key=WRITE_CHECK_KEY, value=""))
            finally:
                transaction.rollback()

    with_retry(write, engine)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def register_worker(engine: Engine, study_id: int) -> tuple[int, int]:
    """Register this process as a worker of the study: (worker id, ordinal among its workers)."""

    def write() -> tuple[int, int]:
        with engine.begin() as conn:
            now = _now()
            result = conn.execute(
                insert(tables.workers).values(
                    study_id=study_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=now,
                    last_seen=now,
                    trials=0,
                )
            )
            worker_id = int(result.inserted_primary_key[0])
            ordinal = conn.execute(
                select(func.count())
                .select_from(tables.workers)
                .where(tables.workers.c.study_id == study_id, tables.workers.c.worker_id < worker_id)
            ).scalar_one()
            return worker_id, int(ordinal)

    return with_retry(write, engine)


def heartbeat(engine: Engine, worker_id: int, added: int) -> None:
    """Record that the worker is alive and has added ``added`` more trials."""

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(
                update(tables.workers)
                .where(tables.workers.c.worker_id == worker_id)
                .values(last_seen=_now(), trials=tables.workers.c.trials + added)
            )

    with_retry(write, engine)


def workers_of(engine: Engine, study_id: int) -> list[dict]:
    """Every worker registered for the study, oldest first."""

    def read() -> list[dict]:
        with engine.connect() as conn:
            rows = conn.execute(
                select(tables.workers).where(tables.workers.c.study_id == study_id).order_by(tables.workers.c.worker_id)
            )
            return [dict(row._mapping) for row in rows]

    return with_retry(read, engine)
