"""Storage URLs: resolution order, redaction, engines that survive real networks."""

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from prune_search.errors import PruneSearchError

DEFAULT_URL = "sqlite:///prune-search.db"
ENV_VAR = "PRUNE_SEARCH_STORAGE"
T = TypeVar("T")


def resolve_url(url: str | None) -> str:
    """``--storage`` if given, else ``$PRUNE_SEARCH_STORAGE``, else an SQLite file in the working directory."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed URL>"


def _sqlite_begin_immediate(engine: Engine) -> None:
    """Make SQLite take its write lock when a transaction starts (SQLAlchemy's documented recipe)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str) -> Engine:
    """An engine for ``url`` with pre-ping (stale connections are replaced) and a checked connection.

    Raises a one-line :class:`PruneSearchError` (password hidden) for a malformed or
    unreachable storage.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise PruneSearchError(
            f"storage URL {redact(url)!s} is malformed; use e.g. sqlite:///prune-search.db or "
            "postgresql+psycopg://user@host/db"
        ) from None
    kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_recycle"] = 3600
    try:
        engine = sqlalchemy.create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        raise PruneSearchError(
            f"cannot use storage {redact(url)} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "install the driver (pip install 'prune-search[postgres]' or '[mysql]') or fix the URL"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _sqlite_begin_immediate(engine)
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0][:160] if exc.orig else type(exc).__name__
        raise PruneSearchError(f"cannot connect to storage {redact(url)}: {reason}") from None
    return engine


def require_existing(url: str) -> None:
    """For a read-only command: a SQLite URL must name an existing file (else a one-line error), so that
    reading never leaves an empty database behind. Server URLs are left to the connection."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # create_engine reports it
    path = parsed.database
    if parsed.get_backend_name() == "sqlite" and path not in (None, "", ":memory:") and not Path(path).is_file():
        raise PruneSearchError(
            f"no database file {path}: fix --storage (or $PRUNE_SEARCH_STORAGE), or create a study there with "
            "'prune-search start'"
        )


def transient(exc: BaseException) -> bool:
    """True for database errors worth retrying: lost connections, deadlocks, lock timeouts."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        return True
    text = str(exc).lower()
    return any(word in text for word in ("deadlock", "lock wait timeout", "could not serialize", "database is locked"))


def with_retry(action: Callable[[], T], attempts: int = 6, delay_s: float = 0.2) -> T:
    """Run ``action``, retrying transient database errors with exponential backoff."""
    for attempt in range(attempts):
        try:
            return action()
        except DBAPIError as exc:
            if attempt == attempts - 1 or not transient(exc):
                raise
            time.sleep(delay_s * 2**attempt)
    raise AssertionError("unreachable")
