"""Optuna's private schema lives in one module, which refuses a database with another schema version."""

import ast
import contextlib
import sqlite3
from pathlib import Path

import optuna
import pytest
from cli_helpers import assert_one_line_error, run_cli
from services import MARIADB, POSTGRES, new_database

import prune_search
from prune_search.errors import PruneSearchError
from prune_search.storage import optuna_tables
from prune_search.storage.url import create_engine

PACKAGE = Path(prune_search.__file__).parent
PRIVATE = "optuna.storages._rdb"
STUDY = "plain"


def _modules() -> dict[str, ast.Module]:
    return {str(path.relative_to(PACKAGE)): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def _imports_private(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PRIVATE):
            return True
        if isinstance(node, ast.Import) and any(alias.name.startswith(PRIVATE) for alias in node.names):
            return True
    return False


def test_one_module_holds_optunas_private_schema():
    modules = _modules()
    assert [name for name, tree in modules.items() if _imports_private(tree)] == ["storage/optuna_tables.py"]
    trial_id_users = [
        name
        for name, tree in modules.items()
        if any(isinstance(node, ast.Attribute) and node.attr == "_trial_id" for node in ast.walk(tree))
    ]
    assert trial_id_users == []


@pytest.fixture
def plain_study(tmp_path) -> tuple[str, Path]:
    """An SQLite file holding an Optuna study with one trial, at Optuna's current schema."""
    path = tmp_path / "study.db"
    url = f"sqlite:///{path}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name=STUDY)
    study.add_trial(optuna.trial.create_trial(value=1.0))
    del study
    return url, path


def _set_revision(path: Path, revision: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    conn.close()


def _rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr) for name in names}
    conn.close()
    return rows


def test_current_schema_passes(plain_study):
    url, _ = plain_study
    optuna_tables.check_schema(create_engine(url), url)
    assert optuna_tables.stored_revision(create_engine(url)) == optuna_tables.SCHEMA_REVISION


def test_new_database_passes(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    optuna_tables.check_schema(create_engine(url), url)


@pytest.mark.parametrize(
    ("revision", "needle"),
    [("v3.0.0.d", "optuna storage upgrade --storage sqlite:///"), ("v9.0.0.a", "a newer Optuna made it")],
)
def test_other_schema_is_refused_and_left_unchanged(plain_study, revision, needle):
    url, path = plain_study
    _set_revision(path, revision)
    before_bytes, before_rows = path.read_bytes(), _rows(path)
    result = run_cli("status", "--study", STUDY, "--storage", url)
    assert_one_line_error(result, f"has Optuna table schema {revision}", optuna_tables.SCHEMA_REVISION, needle)
    assert path.read_bytes() == before_bytes
    assert _rows(path) == before_rows


def test_an_optuna_with_another_schema_is_refused(plain_study, monkeypatch):
    url, _ = plain_study
    monkeypatch.setattr(optuna_tables, "SCHEMA_REVISION", "v9.0.0.a")
    with pytest.raises(PruneSearchError, match=r"^the installed Optuna .* pip install 'optuna==5\.0\.\*'$"):
        optuna_tables.check_schema(create_engine(url), url)


@pytest.mark.parametrize(
    "distribution",
    [
        optuna.distributions.FloatDistribution(0.1, 1.0, step=0.05),
        optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
        optuna.distributions.FloatDistribution(0.0, 1.0),
        optuna.distributions.IntDistribution(1, 64),
        optuna.distributions.IntDistribution(2, 64, step=2),
        optuna.distributions.IntDistribution(1, 64, log=True),
        optuna.distributions.CategoricalDistribution(["min", "median"]),
        optuna.distributions.CategoricalDistribution([1, None, 2.5]),
    ],
)
def test_stored_distributions_read_back_equal_in_fewer_bytes(distribution):
    text = optuna_tables.distribution_text(distribution)
    assert optuna.distributions.json_to_distribution(text) == distribution
    assert len(text) < 0.65 * len(optuna.distributions.distribution_to_json(distribution))


@pytest.mark.parametrize(
    "server",
    ["sqlite", pytest.param(POSTGRES, marks=pytest.mark.db), pytest.param(MARIADB, marks=pytest.mark.db)],
    ids=["sqlite", "postgresql", "mariadb"],
)
def test_trials_read_by_id_equal_optunas_own(server, tmp_path):
    """Every kind of value a trial holds (each distribution, ±inf and nan, attributes, intermediate values,
    unfinished and failed trials, two studies): ``read_trials`` returns what Optuna's storage reads."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'trials.db'}" if server == "sqlite" else stack.enter_context(new_database(server))
        storage = optuna.storages.RDBStorage(url)
        single = optuna.create_study(storage=storage, study_name="single")
        multi = optuna.create_study(storage=storage, study_name="multi", directions=["minimize", "maximize"])
        for i in range(6):
            trial = single.ask()
            trial.suggest_float("x", 0.05, 1.0, step=0.05)
            trial.suggest_float("lr", 1e-4, 1.0, log=True)
            trial.suggest_int("n", 1, 9)
            trial.suggest_categorical("how", ["min", "median", None])
            trial.set_user_attr("keep", {"a": [1, 2], "b": "text"})
            storage.set_trial_system_attr(trial._trial_id, "generation", i)
            for step, value in enumerate([0.5, float("inf"), float("-inf"), float("nan")][: i % 5]):
                trial.report(value, step)
            if i < 4:
                single.tell(
                    trial,
                    [1.0, float("inf"), float("-inf"), None][i],
                    state=[None, None, None, optuna.trial.TrialState.FAIL][i],
                )
            other = multi.ask()
            other.suggest_float("x", 0.05, 1.0)
            if i % 2:
                multi.tell(other, [float(i), float("-inf") if i == 3 else 2.0])
        stored = [*single.get_trials(deepcopy=False), *multi.get_trials(deepcopy=False)]
        ids = [t._trial_id for t in stored]
        read = optuna_tables.read_trials(create_engine(url), [*ids, max(ids) + 99])
        expected = {t._trial_id: t for t in sorted(stored, key=lambda t: t._trial_id)}
        assert repr(read) == repr(expected)  # nan != nan: compared as text
        assert {t.state.name for t in read.values()} == {"COMPLETE", "FAIL", "RUNNING"}
