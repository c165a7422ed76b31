"""A stored study as the database holds it, opened without building anything from it (no torch).

:func:`open_storage` opens a database, :func:`open_stored` one of its prune-search studies: the engine, Optuna's
view, the configuration and the stored texts of its space, importance and fitness table. Read-only commands
(``status``, ``studies``, ``dashboard``) need no more; :func:`prune_search.search.study.open_study` builds the
space and the rest from it.
"""

import json
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import Engine

from prune_search.errors import PruneSearchError
from prune_search.search.config import CONFIG_ATTR, FITNESS_KEY, IMPORTANCE_KEY, SPACE_KEY, objective_names
from prune_search.storage.optuna_tables import check_schema
from prune_search.storage.study_data import ensure_tables, get_data
from prune_search.storage.url import (
    Backoff,
    create_engine,
    database_error,
    redact,
    refused_write,
    reported,
    require_existing,
    server_down,
    storage_error,
    with_retry,
)

SCHEMA_ATTEMPTS = 5


@dataclass
class StoredStudy:
    """An open study as stored: Optuna's view, the raw engine, the configuration (``config``, the study's
    :data:`~prune_search.search.config.CONFIG_ATTR` user attr) and the JSON texts of its space, importance and
    fitness table (``fitness_json``: None when the study has none)."""

    url: str
    engine: Engine
    storage: RDBStorage
    study: optuna.Study
    study_id: int
    config: dict[str, Any]
    space_json: str
    importance_json: str
    fitness_json: str | None

    def objective_names(self) -> list[str]:
        return objective_names(self.config)

    def groups(self) -> int:
        """G, the number of groups of the stored space."""
        return len(self.group_names())

    def group_names(self) -> list[str]:
        """The stored space's group names, in the order of the genes and of the keep counts."""
        return [group["name"] for group in json.loads(self.space_json)["structure"]["groups"]]

    def strategies(self) -> list[str]:
        """The stored space's channel-selection strategies, indexed by a strategy gene's code."""
        return json.loads(self.space_json)["options"]["strategies"]


def open_storage(url: str, *, create: bool = False) -> tuple[Engine, RDBStorage]:
    """The project's engine and Optuna's RDB storage (heartbeats, stale-trial retries, pre-ping).

    A database whose Optuna table schema is not the one :mod:`prune_search.storage.optuna_tables` is
    written for is refused, before Optuna or prune-search writes to it (one-line error). Only with
    ``create`` (``start``: create or join a study) are Optuna's and the project's tables created in a
    new database; for reading, a missing SQLite file or a database without Optuna's tables is refused in
    one line and nothing is created."""
    if not create:
        require_existing(url)
    engine = create_engine(url, wait=create)
    backoff, attempts = Backoff(), 0
    while True:
        try:
            if check_schema(engine, url) is None and not create:
                engine.dispose()
                raise PruneSearchError(f"no prune-search studies in {redact(url)}: create one with prune-search start")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(
                    url,
                    engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=60,
                    grace_period=120,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                    skip_table_creation=not create,
                )
            if create:
                ensure_tables(engine)
            return engine, storage
        except PruneSearchError:
            raise
        except Exception as exc:
            cause = database_error(exc)
            if cause is not None and refused_write(cause):  # a read-only file or a full disk: no retry helps
                raise storage_error(exc, url) from None
            if cause is not None and server_down(cause):  # the server went away after the first connection
                if backoff.wait():
                    continue
                raise storage_error(exc, url) from None
            attempts += 1  # workers racing to create the schema of a fresh database
            if attempts == SCHEMA_ATTEMPTS:
                reason = str(exc).strip().splitlines()[0][:160]
                raise PruneSearchError(f"cannot open Optuna storage {redact(url)}: {reason}") from None
            time.sleep(0.5 * attempts)


def study_exists(storage: RDBStorage, engine: Engine, name: str) -> bool:
    """Whether ``storage`` holds study ``name``; a database outage is ridden out (:func:`with_retry` on ``engine``)."""

    def read() -> bool:
        try:
            storage.get_study_id_from_name(name)
        except KeyError:
            return False
        return True

    return with_retry(read, engine)


def load_stored(url: str, engine: Engine, storage: RDBStorage, name: str, wait_s: float = 0.0) -> StoredStudy:
    """Study ``name`` of ``storage`` as stored; a worker joining a study being created waits up to ``wait_s``
    seconds for its configuration. One-line errors for a study that is not prune-search's or lacks its space."""
    study = optuna.load_study(study_name=name, storage=storage)
    study_id = storage.get_study_id_from_name(name)
    deadline = time.monotonic() + wait_s
    while CONFIG_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise PruneSearchError(
                f"study '{name}' exists but is not a prune-search study (no configuration): another tool made it, "
                f"or its creator was killed while preparing it; remove it with 'optuna delete-study --study-name "
                f"{name} --storage URL' or choose another --study"
            )
        time.sleep(1.0)
        study = optuna.load_study(study_name=name, storage=storage)
    space, importance = get_data(engine, study_id, SPACE_KEY), get_data(engine, study_id, IMPORTANCE_KEY)
    if space is None or importance is None:
        raise PruneSearchError(f"study '{name}' lacks its stored space or importance; create it again under a new name")
    config = study.user_attrs[CONFIG_ATTR]
    return StoredStudy(
        url, engine, storage, study, study_id, config, space, importance, get_data(engine, study_id, FITNESS_KEY)
    )


def open_stored(url: str, name: str) -> StoredStudy:
    """The existing prune-search study ``name`` at ``url`` as stored (nothing is created; one-line errors)."""
    engine, storage = open_storage(url)
    with reported(url):
        if not study_exists(storage, engine, name):
            known = optuna.get_all_study_names(storage)
            raise PruneSearchError(f"no study '{name}' in {redact(url)}; studies there: {', '.join(known) or 'none'}")
        return load_stored(url, engine, storage, name)
