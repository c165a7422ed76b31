"""What the test environment offers: database servers and offline datasets, each with a reason when missing."""

import contextlib
import functools
import os
import pwd
import shutil
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"
SERVERS = {"postgresql": POSTGRES, "mariadb": MARIADB}
STRICT_ENV = "PRUNE_SEARCH_NO_SKIPS"
POSTGRES_BINARIES = ("initdb", "pg_ctl", "postgres")


def strict() -> bool:
    """True where every test must run (CI sets ``PRUNE_SEARCH_NO_SKIPS=1``): a skip there is a failure."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def unavailable(reason: str | None) -> None:
    """Skip the running test with ``reason`` when it is given, fail it instead in strict mode; else nothing."""
    if reason:
        if strict():
            pytest.fail(f"strict run: {reason}")
        pytest.skip(reason)


@functools.cache
def server_missing(url: str) -> str | None:
    """Why the database server at ``url`` cannot be used, or None when it answers ``SELECT 1``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver or connection failure means the service is not there
        return f"database server {url} unreachable ({type(exc).__name__}); start it or run with it"
    finally:
        engine.dispose()
    return None


def databases_missing() -> str | None:
    """Why the db-marked tests cannot run (first missing server), or None when PostgreSQL and MariaDB answer."""
    for url in SERVERS.values():
        reason = server_missing(url)
        if reason:
            return reason
    return None


def postgres_binaries_missing() -> str | None:
    """Why a test cannot start a PostgreSQL server of its own, or None when the server binaries are on PATH (and,
    for root, which they refuse to run as, the ``postgres`` user exists)."""
    missing = [name for name in POSTGRES_BINARIES if shutil.which(name) is None]
    if missing:
        return f"no {', '.join(missing)} on PATH: apt-get install -y postgresql and add its bin folder to PATH"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, which initdb refuses, and there is no postgres user to run the server as"
    return None


def fashion_mnist_missing() -> str | None:
    """Why the dataset-marked tests cannot run, or None when the Debian package's IDX files are present."""
    from prune_search.data.catalog import FASHION_MNIST_DIR

    if any(FASHION_MNIST_DIR.glob("train-images-idx3-ubyte*")):
        return None
    return f"no Fashion-MNIST in {FASHION_MNIST_DIR}: apt-get install -y dataset-fashion-mnist"


@contextlib.contextmanager
def new_database(server: str) -> Iterator[str]:
    """The URL of a new, empty database on ``server`` (a PostgreSQL or MySQL URL), dropped afterwards."""
    database = f"ps_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {database}"))
    try:
        yield server.rsplit("/", 1)[0] + "/" + database
    finally:
        with admin.connect() as conn:
            drop = f"DROP DATABASE {database}" + (" WITH (FORCE)" if server.startswith("postgresql") else "")
            conn.execute(text(drop))
        admin.dispose()
