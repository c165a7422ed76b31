"""Storage URLs: resolution order, redaction, engines that survive real networks."""

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

# Retries of a transient database error (lost connection, deadlock, lock timeout): the first after
# RETRY_FIRST_DELAY_S, each later one twice as late (at most RETRY_MAX_DELAY_S), until the retry window
# (RETRY_WINDOW_S, or $PRUNE_SEARCH_RETRY_S seconds) has passed since the first failure: a database server
# restarting, a failover or a network blip of up to a minute costs a worker nothing; a longer outage ends in
# one line (what is stored stays; rerun to resume).
RETRY_WINDOW_S = 60.0
RETRY_ENV_VAR = "PRUNE_SEARCH_RETRY_S"
RETRY_FIRST_DELAY_S = 0.2
RETRY_MAX_DELAY_S = 5.0
# psycopg logs "error ignored terminating <Pipeline>: the connection is lost" when a connection dies during a
# pipelined write; the retries (or their one-line error) already deal with it, and with no logging configured
# Python would print the record on stderr next to that one line. A NullHandler leaves it to configured handlers.
logging.getLogger("psycopg").addHandler(logging.NullHandler())
# SQLite's primary result codes of a write the database will not take however often it is retried.
_SQLITE_REFUSALS = {
    8: "it is read-only",
    13: "the disk is full",
    10: "the disk reports an I/O error",
    14: "it cannot be opened for writing",
}
# What a connection attempt says when the database server is down, starting or out of reach (worth waiting
# for), as opposed to a server that answers with a refusal (unknown database, wrong password).
_SERVER_DOWN = (
    "connection refused",
    "timeout expired",
    "timed out",
    "the database system is starting up",
    "the database system is not yet accepting connections",  # PostgreSQL >= 13 while it recovers after a crash
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection",
    "connection reset",
    "can't connect to mysql server",
    "lost connection to mysql server",
)


def resolve_url(url: str | None) -> str:
    """``--storage`` if given, else ``$PRUNE_SEARCH_STORAGE``, else an SQLite file in the working directory."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def retry_window() -> float:
    """Seconds a transient database error is retried: ``$PRUNE_SEARCH_RETRY_S`` if set, else
    :data:`RETRY_WINDOW_S`. A value that is not a finite number of seconds, 0 or more, is refused in one line."""
    text = os.environ.get(RETRY_ENV_VAR, "").strip()
    if not text:
        return RETRY_WINDOW_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise PruneSearchError(
            f"{RETRY_ENV_VAR} must be a number of seconds, 0 or more, got '{text}'; unset it for the default "
            f"{RETRY_WINDOW_S:g} s"
        )
    return seconds


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


class Backoff:
    """The waits between the retries of one failing operation: :data:`RETRY_FIRST_DELAY_S`, then each twice as
    long (at most :data:`RETRY_MAX_DELAY_S`), for up to :func:`retry_window` seconds from the first failure."""

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._delay = RETRY_FIRST_DELAY_S

    @property
    def started(self) -> bool:
        """True once :meth:`wait` has been called (the operation failed before)."""
        return self._deadline is not None

    def wait(self) -> bool:
        """After a failure: sleep until the next try and return True, or return False at once when that try
        would come after the retry window (the operation has failed for good)."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + retry_window()
        if now + self._delay > self._deadline:
            return False
        time.sleep(self._delay)
        self._delay = min(2 * self._delay, RETRY_MAX_DELAY_S)
        return True


def create_engine(url: str, *, wait: bool = False) -> Engine:
    """An engine for ``url`` with pre-ping (stale connections are replaced) and a checked connection.

    Raises a one-line :class:`PruneSearchError` (password hidden) for a malformed or
    unreachable storage, or a bad :func:`retry_window`, before any connection. With ``wait`` (a worker
    starting), a database server that does not answer yet (:func:`server_down`: refused, timed out, starting
    up) is waited for up to :func:`retry_window` seconds, with the retries' backoff and one line on stderr
    saying so; a server that answers with a refusal (unknown database, wrong password) fails at once.
    """
    retry_window()
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise PruneSearchError(
            f"storage URL {redact(url)!s} is malformed; use e.g. sqlite:///prune-search.db or "
            "postgresql+psycopg://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend != "sqlite" and not parsed.host and not {"host", "unix_socket"} & set(parsed.query):
        raise PruneSearchError(
            f"storage URL {redact(url)} names no database server; write its host, e.g. "
            f"{parsed.drivername}://user@127.0.0.1/db (a local socket: add ?host=/path/to/socket)"
        )
    kwargs: dict = {"pool_pre_ping": True}
    if backend == "sqlite":
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
    _first_connection(engine, url, wait)
    return engine


def server_down(exc: BaseException) -> bool:
    """True for a connection error that a database server starting, restarting or out of reach for a while
    gives (refused, reset, timed out, "starting up"), as opposed to one it answers with (an unknown database,
    a wrong password, an unknown host name)."""
    error = database_error(exc)
    if error is None or not isinstance(error, OperationalError):
        return False
    text = str(error.orig if error.orig is not None else error).lower()
    return any(words in text for words in _SERVER_DOWN)


def _first_connection(engine: Engine, url: str, wait: bool) -> None:
    """Connect once to check ``url``; with ``wait``, wait out a server that is down (see :func:`create_engine`)."""
    backoff = Backoff()
    while True:
        try:
            with engine.connect():
                return
        except DBAPIError as exc:
            reason = _reason(exc)
            if not (wait and server_down(exc)):
                raise PruneSearchError(f"cannot connect to storage {redact(url)}: {reason}") from None
            if not backoff.started:
                print(
                    f"storage {redact(url)} does not answer ({reason}); waiting up to {retry_window():g} s for it",
                    file=sys.stderr,
                    flush=True,
                )
            if not backoff.wait():
                raise PruneSearchError(
                    f"storage {redact(url)} did not answer within {retry_window():g} s ({reason}); nothing was "
                    "written: rerun the same command once the database answers"
                ) from None


def require_existing(url: str) -> None:
    """For a read-only command: a SQLite URL must name an existing file (else a one-line error), so that
    reading never leaves an empty database behind. Server URLs are left to the connection."""
    path = sqlite_file(url)  # a malformed URL: create_engine reports it
    if path is not None and not Path(path).is_file():
        raise PruneSearchError(
            f"no database file {path}: fix --storage (or $PRUNE_SEARCH_STORAGE), or create a study there with "
            "'prune-search start'"
        )


def sqlite_file(url: str) -> str | None:
    """The file an SQLite ``url`` names (``file:`` URI form too), or None (another backend, in memory)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or path in (None, "", ":memory:"):
        return None
    return path.removeprefix("file:") if parsed.query.get("uri") == "true" else path


def refused_write(exc: BaseException) -> str | None:
    """Why the database refuses writes for good (a read-only file or database, a full disk), or None."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _SQLITE_REFUSALS:
        return _SQLITE_REFUSALS[code & 0xFF]
    text = str(orig if orig is not None else exc).lower()
    if "readonly database" in text or "read-only transaction" in text:
        return "it is read-only"
    if any(words in text for words in ("disk is full", "no space left", "table is full", "disk full")):
        return "the disk is full"
    return None


def transient(exc: BaseException) -> bool:
    """True for database errors worth retrying: lost connections, deadlocks, lock timeouts (not a write the
    database refuses for good, :func:`refused_write`)."""
    if refused_write(exc):
        return False
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        return True
    text = str(exc).lower()
    return any(word in text for word in ("deadlock", "lock wait timeout", "could not serialize", "database is locked"))


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def database_error(exc: BaseException) -> DBAPIError | None:
    """The database error behind ``exc``: itself, or the cause it was raised from (Optuna's
    StorageInternalError is raised from the SQLAlchemy error), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DBAPIError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None


def storage_error(exc: BaseException, url: str | None) -> PruneSearchError | None:
    """The one-line error for a database failure behind ``exc`` that no retry fixes (a write refused for good)
    or that outlasted the retries (the storage unreachable), or None for any other error (a bug: re-raise it).
    ``url`` names the storage (None: unknown)."""
    error = database_error(exc)
    if error is None:
        return None
    reason = _reason(error)
    refusal = refused_write(error)
    if refusal is not None:
        where = (sqlite_file(url) or f"storage {redact(url)}") if url else "the storage"
        fix = "free disk space" if refusal == "the disk is full" else "make it writable (or use another --storage)"
        return PruneSearchError(
            f"cannot write to {where}: {refusal} ({reason}); what is stored stays: {fix}, then rerun the same "
            "command to resume"
        )
    if transient(error):
        where = f"storage {redact(url)}" if url else "the storage"
        return PruneSearchError(
            f"{where} is unreachable ({reason}); what is stored stays: rerun the same command to resume once the "
            "database answers again"
        )
    return None


@contextmanager
def reported(url: str) -> Iterator[None]:
    """Turn a database failure of the block that no retry fixes into its one-line :func:`storage_error`."""
    try:
        yield
    except PruneSearchError:
        raise
    except Exception as exc:
        error = storage_error(exc, url)
        if error is None:
            raise
        raise error from None


def with_retry(action: Callable[[], T], engine: Engine | None = None) -> T:
    """Run ``action``, retrying transient database errors with exponential backoff for up to
    :func:`retry_window` seconds. A write the database refuses for good, or a transient error that outlasts the
    retries, ends in a one-line :class:`PruneSearchError` (:func:`storage_error`; naming ``engine``'s URL).
    A database error counts whether ``action`` raises it itself or raises another error from it (Optuna's
    storage raises ``StorageInternalError`` from the SQLAlchemy error); any other error, a
    :class:`PruneSearchError` included, propagates unchanged."""
    url = engine.url.render_as_string(hide_password=True) if engine is not None else None
    backoff = Backoff()
    while True:
        try:
            return action()
        except PruneSearchError:
            raise
        except Exception as exc:
            cause = database_error(exc)
            if cause is None:
                raise
            if not transient(cause):
                error = storage_error(cause, url)
                if error is None:
                    raise
                raise error from None
            if not backoff.wait():
                raise storage_error(cause, url) from None
