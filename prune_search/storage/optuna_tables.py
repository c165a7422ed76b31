"""Optuna's own tables, read and written directly: the one module that knows their private schema.

Optuna's API cannot store a whole generation of trials in one transaction, nor write to a
finished trial; prune-search does both on Optuna's tables (``optuna.storages._rdb.models``,
not a public API), writing exactly the rows Optuna writes, so that Optuna, its CLI and
optuna-dashboard read them unchanged. Every such access lives here, written against one
revision of Optuna's table schema, :data:`SCHEMA_REVISION`; :func:`check_schema` refuses a
database (or an Optuna installation) with another one before anything is written.
"""

import datetime
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.engine import Connection, Engine

from prune_search.errors import PruneSearchError
from prune_search.storage.study_data import touch_revision
from prune_search.storage.url import redact, with_retry

SCHEMA_REVISION = "v3.2.0.a"
"""The alembic revision of Optuna's tables that this module reads and writes (Optuna 5.0's)."""
OPTUNA_REQUIREMENT = "optuna==5.0.*"
"""An Optuna release whose tables are at :data:`SCHEMA_REVISION`."""

_studies = models.StudyModel.__table__
_trials = models.TrialModel.__table__
_params = models.TrialParamModel.__table__
_values = models.TrialValueModel.__table__
_user_attrs = models.TrialUserAttributeModel.__table__
_system_attrs = models.TrialSystemAttributeModel.__table__
_study_user_attrs = models.StudyUserAttributeModel.__table__
_intermediate = models.TrialIntermediateValueModel.__table__


@dataclass(frozen=True)
class CompleteTrial:
    """One COMPLETE trial in Optuna's terms: parameters (external values), objective values, attributes."""

    params: dict[str, Any]
    values: list[float]
    user_attrs: dict[str, Any]
    system_attrs: dict[str, Any]


@functools.cache
def _known_revisions() -> tuple[str, frozenset[str]]:
    """The installed Optuna's head schema revision, and every revision its migrations know."""
    script = ScriptDirectory(str(Path(models.__file__).parent / "alembic"))
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def stored_revision(engine: Engine) -> str | None:
    """The Optuna schema revision recorded in the database (``alembic_version``); None before Optuna set it up."""
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ",".join(heads) or None


def check_schema(engine: Engine, url: str) -> str | None:
    """Refuse, with a one-line :class:`PruneSearchError` and without writing anything, an installed Optuna
    or a database ``url`` whose table schema is not :data:`SCHEMA_REVISION`. A new database passes.

    Returns the stored revision: None for a database without Optuna's tables."""
    head, known = _known_revisions()
    if head != SCHEMA_REVISION:
        raise PruneSearchError(
            f"the installed Optuna {optuna.__version__} has table schema {head}, this prune-search is written for "
            f"{SCHEMA_REVISION}: pip install '{OPTUNA_REQUIREMENT}'"
        )
    stored = stored_revision(engine)
    if stored is None or stored == SCHEMA_REVISION:
        return stored
    where = f"storage {redact(url)} has Optuna table schema {stored}, this prune-search needs {SCHEMA_REVISION}"
    if stored in known:
        raise PruneSearchError(f"{where}: back it up, then run 'optuna storage upgrade --storage {redact(url)}'")
    raise PruneSearchError(f"{where}: a newer Optuna made it; use the Optuna and prune-search versions that made it")


def lock_study(conn: Connection, study_id: int) -> None:
    """Lock the study's row until ``conn``'s transaction ends (``SELECT … FOR UPDATE``)."""
    conn.execute(select(_studies.c.study_id).where(_studies.c.study_id == study_id).with_for_update())


def count_complete(conn: Connection, study_id: int) -> int:
    """COMPLETE trials of the study."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(_trials)
            .where(_trials.c.study_id == study_id, _trials.c.state == TrialState.COMPLETE)
        ).scalar_one()
    )


def count_by_state(conn: Connection, study_id: int) -> dict[str, int]:
    """``{state name: trials}`` of the study (states it has no trial in left out), counted by the database."""
    query = select(_trials.c.state, func.count()).where(_trials.c.study_id == study_id).group_by(_trials.c.state)
    return {TrialState(state).name: int(n) for state, n in conn.execute(query)}


def count_trials(conn: Connection, study_id: int) -> int:
    """Trials of the study in any state: the number the next trial gets."""
    query = select(func.count()).select_from(_trials).where(_trials.c.study_id == study_id)
    return int(conn.execute(query).scalar_one())


def study_list(engine: Engine, user_attr: str) -> list[tuple[str, int, bool]]:
    """``(name, trials in any state, whether it has the study user attribute user_attr)`` of every study in the
    storage, oldest first: counted by the database (Optuna's study summaries read every trial)."""

    def read() -> list[tuple[str, int, bool]]:
        with engine.connect() as conn:
            counts = conn.execute(
                select(_studies.c.study_id, _studies.c.study_name, func.count(_trials.c.trial_id))
                .select_from(_studies)
                .outerjoin(_trials, _trials.c.study_id == _studies.c.study_id)
                .group_by(_studies.c.study_id, _studies.c.study_name)
                .order_by(_studies.c.study_id)
            ).all()
            marked = set(
                conn.execute(select(_study_user_attrs.c.study_id).where(_study_user_attrs.c.key == user_attr)).scalars()
            )
        return [(name, int(trials), study_id in marked) for study_id, name, trials in counts]

    return with_retry(read, engine)


def _insert_ids(conn: Connection, rows: list[dict]) -> list[int]:
    if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
        result = conn.execute(insert(_trials).returning(_trials.c.trial_id, sort_by_parameter_order=True), rows)
        return [int(i) for i in result.scalars().all()]
    return [int(conn.execute(insert(_trials), row).inserted_primary_key[0]) for row in rows]


def insert_complete_trials(
    conn: Connection,
    study_id: int,
    first_number: int,
    trials: Sequence[CompleteTrial],
    distributions: dict[str, BaseDistribution],
) -> list[int]:
    """Insert ``trials`` as COMPLETE trials numbered from ``first_number``, in ``conn``'s transaction, with
    one multi-row insert per table. Returns their trial ids, in order."""
    dist_json = {name: distribution_text(d) for name, d in distributions.items()}
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    ids = _insert_ids(
        conn,
        [
            {
                "number": first_number + i,
                "study_id": study_id,
                "state": TrialState.COMPLETE,
                "datetime_start": now,
                "datetime_complete": now,
            }
            for i in range(len(trials))
        ],
    )
    params, values, user_attrs, system_attrs = [], [], [], []
    for trial_id, trial in zip(ids, trials, strict=True):
        for name, value in trial.params.items():
            params.append(
                {
                    "trial_id": trial_id,
                    "param_name": name,
                    "param_value": distributions[name].to_internal_repr(value),
                    "distribution_json": dist_json[name],
                }
            )
        for objective, value in enumerate(trial.values):
            stored, kind = models.TrialValueModel.value_to_stored_repr(float(value))
            values.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind})
        for key, value in trial.user_attrs.items():
            user_attrs.append({"trial_id": trial_id, "key": key, "value_json": _compact(value)})
        for key, value in trial.system_attrs.items():
            system_attrs.append({"trial_id": trial_id, "key": key, "value_json": _compact(value)})
    for table, rows in ((_params, params), (_values, values), (_user_attrs, user_attrs), (_system_attrs, system_attrs)):
        if rows:
            conn.execute(insert(table), rows)
    return ids


def distribution_text(distribution: BaseDistribution) -> str:
    """A parameter's distribution as stored in each of its rows: Optuna's abbreviated JSON form, which its
    ``json_to_distribution`` reads back equal (``{"type":"float","low":0.1,"high":1.0,"step":0.05}``,
    about half the bytes of the named form ``distribution_to_json`` writes); the named form for other kinds."""
    short: dict[str, Any]
    if isinstance(distribution, CategoricalDistribution):
        short = {"type": "categorical", "choices": list(distribution.choices)}
    elif isinstance(distribution, FloatDistribution | IntDistribution):
        kind = "float" if isinstance(distribution, FloatDistribution) else "int"
        short = {"type": kind, "low": distribution.low, "high": distribution.high}
        if distribution.step is not None:
            short["step"] = distribution.step
        if distribution.log:
            short["log"] = True
    else:
        return _compact(json.loads(distribution_to_json(distribution)))
    return _compact(short)


def _compact(value: Any) -> str:
    """JSON without spaces (what Optuna reads back with ``json.loads``, in fewer bytes per stored row)."""
    return json.dumps(value, separators=(",", ":"))


def _upsert(engine: Engine, table: Table, trial_id: int, values: dict[str, Any]) -> None:
    """Write attributes of a finished trial, and give its study a new revision (:func:`touch_revision`)."""

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(values))))
            conn.execute(
                insert(table), [{"trial_id": trial_id, "key": k, "value_json": _compact(v)} for k, v in values.items()]
            )
            study_id = conn.execute(select(_trials.c.study_id).where(_trials.c.trial_id == trial_id)).scalar_one()
            touch_revision(conn, int(study_id))

    with_retry(write, engine)


def set_finished_user_attrs(engine: Engine, trial_id: int, values: dict[str, Any]) -> None:
    """Set user attributes of a (finished) trial in one transaction, which Optuna's API refuses."""
    _upsert(engine, _user_attrs, trial_id, values)


def attach_artifact(engine: Engine, trial_id: int, artifact_id: str, filename: str, mimetype: str) -> None:
    """Register an artifact already written to the artifact store on a (finished) trial, as
    ``optuna.artifacts.upload_artifact`` does (an ``artifacts:<id>`` system attribute)."""
    meta = {"artifact_id": artifact_id, "filename": filename, "mimetype": mimetype, "encoding": None}
    _upsert(engine, _system_attrs, trial_id, {f"artifacts:{artifact_id}": json.dumps(meta)})  # as Optuna stores it


def user_attrs_of_trials(engine: Engine, study_id: int, key: str) -> list[tuple[int, dict[str, Any]]]:
    """``(trial number, {key: value})`` of every trial of the study with user attribute ``key`` or ones named
    ``key.<field>``, by number."""

    def read() -> list[tuple[int, dict[str, Any]]]:
        with engine.connect() as conn:
            rows = conn.execute(
                select(_trials.c.number, _user_attrs.c.key, _user_attrs.c.value_json)
                .join(_user_attrs, _user_attrs.c.trial_id == _trials.c.trial_id)
                .where(
                    _trials.c.study_id == study_id,
                    (_user_attrs.c.key == key) | _user_attrs.c.key.startswith(f"{key}.", autoescape=True),
                )
                .order_by(_trials.c.number)
            )
            found: dict[int, dict[str, Any]] = {}
            for number, name, value in rows:
                found.setdefault(int(number), {})[name] = json.loads(value)
            return list(found.items())

    return with_retry(read, engine)


def user_attrs_by_trial(engine: Engine, trial_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """``{Optuna trial id: {key: value}}`` of every user attribute of the trials ``trial_ids`` (those with none
    are left out), read in chunks of 500 ids."""

    def read() -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        with engine.connect() as conn:
            for start in range(0, len(trial_ids), 500):
                chunk = [int(i) for i in trial_ids[start : start + 500]]
                rows = conn.execute(
                    select(_user_attrs.c.trial_id, _user_attrs.c.key, _user_attrs.c.value_json).where(
                        _user_attrs.c.trial_id.in_(chunk)
                    )
                )
                for trial_id, key, value in rows:
                    found.setdefault(int(trial_id), {})[key] = json.loads(value)
        return found

    return with_retry(read, engine)


@dataclass(frozen=True)
class IndexedTrial:
    """One trial of a study without its parameters or attributes: Optuna's trial id, its number, its state and
    its objective values (None unless it is COMPLETE with a value for each of the study's objectives)."""

    trial_id: int
    number: int
    state: TrialState
    values: tuple[float, ...] | None


def trial_index(engine: Engine, study_id: int, objectives: int) -> list[IndexedTrial]:
    """Every trial of the study (``objectives`` objectives), by number, in two queries: what choosing among a
    large study's trials needs, without reading their parameters and attributes as Optuna does."""

    def read() -> list[IndexedTrial]:
        with engine.connect() as conn:
            rows = conn.execute(
                select(_trials.c.trial_id, _trials.c.number, _trials.c.state)
                .where(_trials.c.study_id == study_id)
                .order_by(_trials.c.number)
            ).all()
            stored = conn.execute(
                select(_values.c.trial_id, _values.c.objective, _values.c.value, _values.c.value_type)
                .join(_trials, _trials.c.trial_id == _values.c.trial_id)
                .where(_trials.c.study_id == study_id)
            )
            values: dict[int, dict[int, float]] = {}
            for trial_id, objective, value, kind in stored:
                values.setdefault(int(trial_id), {})[int(objective)] = models.TrialValueModel.stored_repr_to_value(
                    value, kind
                )
        out = []
        for trial_id, number, stored_state in rows:
            state, found = TrialState(stored_state), values.get(int(trial_id), {})
            complete = state == TrialState.COMPLETE and set(found) == set(range(objectives))
            row_values = tuple(found[i] for i in range(objectives)) if complete else None
            out.append(IndexedTrial(int(trial_id), int(number), state, row_values))
        return out

    return with_retry(read, engine)


READ_CHUNK = 500
"""Trial ids per query where trials are read by id (an ``IN`` list, well below SQLite's variable limit)."""


def read_trials(engine: Engine, trial_ids: Sequence[int]) -> dict[int, FrozenTrial]:
    """``{Optuna trial id: trial}`` of the stored trials among ``trial_ids``, as Optuna's storage reads them
    (equal ``FrozenTrial``s): one query per table and chunk of :data:`READ_CHUNK` ids, faster than Optuna's ORM."""

    def read() -> dict[int, FrozenTrial]:
        out: dict[int, FrozenTrial] = {}
        ids = sorted(int(i) for i in trial_ids)
        with engine.connect() as conn:
            for start in range(0, len(ids), READ_CHUNK):
                out |= _read_chunk(conn, ids[start : start + READ_CHUNK])
        return out

    return with_retry(read, engine)


@functools.lru_cache(maxsize=1024)
def _distribution(text: str) -> BaseDistribution:
    return json_to_distribution(text)


def _read_chunk(conn: Connection, ids: list[int]) -> dict[int, FrozenTrial]:
    def rows(table: Table, *columns: str, order: str | None = None) -> list[Any]:
        query = select(table.c.trial_id, *(table.c[c] for c in columns)).where(table.c.trial_id.in_(ids))
        return conn.execute(query.order_by(table.c[order]) if order else query).all()

    params: dict[int, list[tuple[str, float, str]]] = {}
    stored_params = rows(_params, "param_name", "param_value", "distribution_json", order="param_id")
    for trial_id, name, value, dist in stored_params:
        params.setdefault(trial_id, []).append((name, value, dist))
    values: dict[int, dict[int, float]] = {}
    for trial_id, objective, value, kind in rows(_values, "objective", "value", "value_type"):
        values.setdefault(trial_id, {})[objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
    attrs: list[dict[int, dict[str, Any]]] = [{}, {}]
    for found, table in zip(attrs, (_user_attrs, _system_attrs), strict=True):
        for trial_id, key, text in rows(table, "key", "value_json"):
            found.setdefault(trial_id, {})[key] = json.loads(text)
    steps: dict[int, dict[int, float]] = {}
    for trial_id, step, value, kind in rows(_intermediate, "step", "intermediate_value", "intermediate_value_type"):
        steps.setdefault(trial_id, {})[step] = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
            value, kind
        )
    out = {}
    for trial_id, number, state, started, completed in rows(
        _trials, "number", "state", "datetime_start", "datetime_complete", order="trial_id"
    ):
        found = values.get(trial_id)
        distributions = {name: _distribution(dist) for name, _, dist in params.get(trial_id, [])}
        out[trial_id] = FrozenTrial(
            number=number,
            state=TrialState(state),
            value=None,
            values=[found[i] for i in range(len(found))] if found else None,
            datetime_start=started,
            datetime_complete=completed,
            params={name: distributions[name].to_external_repr(v) for name, v, _ in params.get(trial_id, [])},
            distributions=distributions,
            user_attrs=attrs[0].get(trial_id, {}),
            system_attrs=attrs[1].get(trial_id, {}),
            intermediate_values=steps.get(trial_id, {}),
            trial_id=trial_id,
        )
    return out
