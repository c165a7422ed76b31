"""Faults that lose nothing (issue 17): reading creates nothing, outages and read-only or full databases end in
one line with what is stored kept, damaged exports and unwritable finalize targets are refused before any work,
budgets outside the space are refused."""

import json
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from cli_helpers import assert_one_line_error, run_cli
from services import unavailable
from sqlalchemy import create_engine, event, inspect

import prune_search
from prune_search.errors import PruneSearchError
from prune_search.evaluators import compute_importance
from prune_search.evaluators.materialize import materialize
from prune_search.finalize import FinalizeConfig, finalize_trial
from prune_search.finalize.export import export
from prune_search.finalize.run import RESULT_ATTR
from prune_search.models import ModelSpec, build_model
from prune_search.search import StartOptions, create_or_join, open_study, run_worker
from prune_search.search.config import parse_budget
from prune_search.search.stored import open_storage
from prune_search.search.study_note import update_study_note
from prune_search.space import PruningSpace
from prune_search.storage import url as storage_url
from prune_search.storage.bulk import complete_trials
from prune_search.storage.url import create_engine as storage_engine


def _options(checkpoint: Path, **kwargs) -> StartOptions:
    """Small studies with the Taylor proxy (no fitness table to measure: that has tests of its own)."""
    kwargs = {"proxy": "taylor_loss", **kwargs}
    return StartOptions(evaluations=0, checkpoint=checkpoint, population=20, calibration_batches=2, **kwargs)


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    return names


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and len(message) < 500, message
    return message


# 1. Reading creates nothing --------------------------------------------------------------------------------------


def test_status_on_an_empty_sqlite_file_creates_no_tables(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    url = f"sqlite:///{empty}"
    assert_one_line_error(
        run_cli("status", "--study", "x", "--storage", url), f"no prune-search studies in {url}", "prune-search start"
    )
    with pytest.raises(PruneSearchError, match=r"^no prune-search studies in .*: create one with prune-search start$"):
        open_storage(url)
    assert empty.stat().st_size == 0 and _tables(empty) == []


@pytest.mark.db
def test_reading_an_empty_server_database_creates_no_tables(fresh_database):
    with pytest.raises(PruneSearchError, match="no prune-search studies in") as refused:
        open_study(fresh_database, "x")
    _one_line(refused)
    engine = create_engine(fresh_database)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["postgresql+psycopg://", "mysql+pymysql://", "postgresql+psycopg:///test"])
def test_a_server_url_without_a_host_is_refused(url):
    with pytest.raises(PruneSearchError, match="names no database server; write its host") as refused:
        storage_engine(url)
    _one_line(refused)


# 2. Database outages -----------------------------------------------------------------------------------------------


class Outage:
    """New connections of ``target`` fail, as with a database server gone, from :meth:`begin` for ``seconds``.

    ``target``: one engine, or the ``Engine`` class for every engine (Optuna's own included); used as a context
    manager, the outage is removed on exit."""

    def __init__(self, target) -> None:
        self.target = target
        self.until = 0.0
        self.refused = 0
        event.listen(target, "do_connect", self._connect)

    def __enter__(self) -> "Outage":
        return self

    def __exit__(self, *_exc) -> None:
        event.remove(self.target, "do_connect", self._connect)

    def _connect(self, *_args) -> None:
        if time.monotonic() < self.until:
            self.refused += 1
            raise sqlite3.OperationalError("server closed the connection unexpectedly (test outage)")

    def begin(self, seconds: float) -> None:
        if isinstance(self.target, sqlalchemy.engine.Engine):
            self.target.dispose()  # the pooled connections die with the server
        self.until = time.monotonic() + seconds

    def end(self) -> None:
        self.until = 0.0


def test_a_worker_rides_out_a_short_outage(sqlite_url, digits_checkpoint):
    handle, _ = create_or_join(sqlite_url, "short", _options(digits_checkpoint), device="cpu", progress=False)
    outage = Outage(handle.engine)
    started = []

    def down_after_first(report) -> None:
        if not started:
            started.append(report.generation)
            outage.begin(1.5)

    assert run_worker(handle, 60, on_generation=down_after_first) == 60
    assert outage.refused > 0
    assert complete_trials(handle.engine, handle.study_id) == 60


@pytest.mark.parametrize(
    ("message", "down"),
    [
        ('connection to server at "127.0.0.1", port 5432 failed: Connection refused', True),
        ("FATAL:  the database system is starting up", True),
        ("FATAL:  the database system is not yet accepting connections", True),
        ("(2003, \"Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)\")", True),
        ('FATAL:  database "nope" does not exist', False),
        ('FATAL:  password authentication failed for user "root"', False),
    ],
)
def test_server_down_tells_a_server_worth_waiting_for_from_one_that_refuses(message, down):
    """A server starting or recovering from a crash ("not yet accepting connections") is waited for; an unknown
    database or a wrong password is not."""
    error = sqlalchemy.exc.OperationalError("connect", None, Exception(message))
    assert storage_url.server_down(error) is down


def test_with_retry_retries_a_database_error_behind_another_error_and_passes_refusals_through():
    """A transient database error that Optuna re-raises as ``StorageInternalError`` is retried until the action
    succeeds; a :class:`PruneSearchError` raised from one is a deliberate refusal and propagates unchanged."""
    lost = sqlalchemy.exc.OperationalError("select 1", {}, sqlite3.OperationalError("connection lost"))
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise optuna.exceptions.StorageInternalError("commit failed") from lost
        return "stored"

    assert storage_url.with_retry(flaky) == "stored" and len(calls) == 3

    def refused() -> None:
        raise PruneSearchError("refused on purpose") from lost

    with pytest.raises(PruneSearchError, match=r"^refused on purpose$"):
        storage_url.with_retry(refused)


def test_the_dashboard_note_rides_out_a_short_outage(sqlite_url, digits_checkpoint):
    """The study note a worker saves every few generations goes through Optuna's own storage (its own engine),
    which raises ``StorageInternalError`` from the lost connection: it is retried like every other write, not
    turned into a one-line exit (a worker ended so when a real server restarted)."""
    handle, _ = create_or_join(sqlite_url, "note", _options(digits_checkpoint), device="cpu", progress=False)
    run_worker(handle, 20)
    outage = Outage(handle.storage.engine)
    outage.begin(1.0)
    update_study_note(handle)
    assert outage.refused > 0
    attrs = optuna.storages.RDBStorage(sqlite_url).get_study_system_attrs(handle.study_id)
    assert "- trials: 20;" in attrs["dashboard:note_str:0"]


def test_finalize_records_its_result_through_a_short_outage(sqlite_url, digits_checkpoint, tmp_path):
    """An outage of Optuna's own storage as the fine-tuning ends: the result is recorded once the database is
    back (trial attributes, plan artifact, dashboard note), not lost to a one-line exit after the training."""
    handle, _ = create_or_join(sqlite_url, "fin-outage", _options(digits_checkpoint), device="cpu", progress=False)
    run_worker(handle, 20)
    outage = Outage(handle.storage.engine)
    result, _ = finalize_trial(
        handle,
        0,
        FinalizeConfig(epochs=1),
        tmp_path / "out",
        artifact_dir=tmp_path / "art",
        progress=False,
        on_epoch_end=lambda _record: outage.begin(2.0),
    )
    assert outage.refused > 0
    trial = optuna.load_study(study_name="fin-outage", storage=sqlite_url).trials[0]
    assert trial.user_attrs[f"{RESULT_ATTR}.test_acc"] == result["test_acc"]
    assert any(key.startswith("artifacts:") for key in trial.system_attrs)
    notes = optuna.storages.RDBStorage(sqlite_url).get_study_system_attrs(handle.study_id)
    assert any("Finalized trial 0" in str(value) for value in notes.values())


def test_a_long_outage_ends_in_one_line_and_a_rerun_resumes(sqlite_url, digits_checkpoint, monkeypatch):
    handle, _ = create_or_join(sqlite_url, "long", _options(digits_checkpoint), device="cpu", progress=False)
    monkeypatch.setattr(storage_url, "RETRY_WINDOW_S", 1.0)
    outage = Outage(handle.engine)
    stored = []

    def down_after_first(report) -> None:
        if not stored:
            stored.append(report.complete)
            outage.begin(3600)

    started = time.monotonic()
    with pytest.raises(PruneSearchError, match="is unreachable") as lost:
        run_worker(handle, 60, on_generation=down_after_first)
    assert time.monotonic() - started < 30
    message = _one_line(lost)
    assert "test outage" in message and "what is stored stays" in message and "rerun the same command" in message
    outage.end()
    assert complete_trials(handle.engine, handle.study_id) == stored[0] == 20
    run_worker(handle, 60)
    assert complete_trials(handle.engine, handle.study_id) == 60
    assert len(optuna.load_study(study_name="long", storage=sqlite_url).trials) == 60


@pytest.mark.parametrize("study", ["new", "existing"])
def test_an_outage_right_after_the_first_connection_is_ridden_out(study, sqlite_url, digits_checkpoint, monkeypatch):
    """The server goes away just after a starting worker's first connection, while it checks the schema, sets
    up Optuna's storage and looks the study up: it waits for the server as a running worker does, then creates
    or joins the study."""
    if study == "existing":
        create_or_join(sqlite_url, study, _options(digits_checkpoint), device="cpu", progress=False)
    first_connection = storage_url.create_engine

    with Outage(sqlalchemy.engine.Engine) as outage:

        def then_down(url, **kwargs):
            engine = first_connection(url, **kwargs)
            engine.dispose()  # the pooled connections die with the server
            outage.begin(1.5)
            return engine

        monkeypatch.setattr("prune_search.search.stored.create_engine", then_down)
        handle, created = create_or_join(sqlite_url, study, _options(digits_checkpoint), device="cpu", progress=False)
    assert outage.refused > 0 and created == (study == "new")
    assert run_worker(handle, 20) == 20
    assert complete_trials(handle.engine, handle.study_id) == 20


def test_a_joining_worker_rides_out_an_outage_while_it_looks_the_study_up(sqlite_url, digits_checkpoint, monkeypatch):
    """The server goes away just as a worker asks whether the study exists (after the schema check and Optuna's
    set-up went through): it waits and joins."""
    create_or_join(sqlite_url, "lookup", _options(digits_checkpoint), device="cpu", progress=False)
    lookup = optuna.storages.RDBStorage.get_study_id_from_name
    refused = []

    def down_twice(self, name):
        if len(refused) < 2:
            refused.append(name)
            raise sqlalchemy.exc.OperationalError("select", {}, sqlite3.OperationalError("connection refused (test)"))
        return lookup(self, name)

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_study_id_from_name", down_twice)
    handle, created = create_or_join(sqlite_url, "lookup", _options(digits_checkpoint), device="cpu", progress=False)
    assert refused == ["lookup", "lookup"] and not created
    assert run_worker(handle, 20) == 20


def test_an_outage_right_after_the_first_connection_that_outlasts_the_window_is_one_line(
    sqlite_url, digits_checkpoint, monkeypatch
):
    create_or_join(sqlite_url, "kept", _options(digits_checkpoint), device="cpu", progress=False)
    monkeypatch.setattr(storage_url, "RETRY_WINDOW_S", 1.0)
    first_connection = storage_url.create_engine

    with Outage(sqlalchemy.engine.Engine) as outage:

        def then_down(url, **kwargs):
            engine = first_connection(url, **kwargs)
            engine.dispose()
            outage.begin(3600)
            return engine

        monkeypatch.setattr("prune_search.search.stored.create_engine", then_down)
        with pytest.raises(PruneSearchError, match="is unreachable") as lost:
            create_or_join(sqlite_url, "kept", _options(digits_checkpoint), device="cpu", progress=False)
    message = _one_line(lost)
    assert "test outage" in message and "what is stored stays" in message and "rerun the same command" in message
    assert [s.study_name for s in optuna.get_all_study_summaries(sqlite_url)] == ["kept"]


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_retry_window_is_refused_in_one_line_before_the_storage_is_touched(value, tmp_path):
    """A ``PRUNE_SEARCH_RETRY_S`` that is not a number of seconds, 0 or more, ends ``start`` in one line naming
    the variable and the value, and no database file is created."""
    path = tmp_path / "study.db"
    result = run_cli(
        "start", "--study", "x", "--storage", f"sqlite:///{path}", "--no-progress", env={"PRUNE_SEARCH_RETRY_S": value}
    )
    assert_one_line_error(result, f"PRUNE_SEARCH_RETRY_S must be a number of seconds, 0 or more, got '{value}'")
    assert not path.exists()


def test_the_retry_window_is_read_from_the_environment(monkeypatch):
    """``PRUNE_SEARCH_RETRY_S`` sets the retry window in seconds; unset or blank, it is :data:`RETRY_WINDOW_S`."""
    monkeypatch.setenv("PRUNE_SEARCH_RETRY_S", "2.5")
    assert storage_url.retry_window() == 2.5
    monkeypatch.setenv("PRUNE_SEARCH_RETRY_S", " ")
    assert storage_url.retry_window() == storage_url.RETRY_WINDOW_S == 60.0
    monkeypatch.delenv("PRUNE_SEARCH_RETRY_S")
    assert storage_url.retry_window() == 60.0


# 3. Read-only or full SQLite files ---------------------------------------------------------------------------------


def test_start_on_a_read_only_database_file_is_one_line_and_changes_nothing(tmp_path, digits_checkpoint):
    path = tmp_path / "study.db"
    create_or_join(f"sqlite:///{path}", "ro", _options(digits_checkpoint), device="cpu", progress=False)
    before = path.read_bytes()
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"  # SQLite refuses writes as for a read-only file, even to root
    result = run_cli("start", "--study", "ro", "--storage", read_only, "--trials", "40", "--no-progress")
    assert_one_line_error(result, f"cannot write to {path}: it is read-only", "what is stored stays")
    assert path.read_bytes() == before
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(PruneSearchError, match=f"cannot write to {empty}: it is read-only") as refused:
        create_or_join(f"sqlite:///file:{empty}?mode=ro&uri=true", "new", _options(digits_checkpoint), device="cpu")
    _one_line(refused)
    assert empty.stat().st_size == 0


def test_a_full_disk_during_start_is_one_line_and_a_rerun_resumes(tmp_path, digits_checkpoint):
    path = tmp_path / "study.db"
    url = f"sqlite:///{path}"
    handle, _ = create_or_join(url, "full", _options(digits_checkpoint), device="cpu", progress=False)
    run_worker(handle, 40)
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()

    def cap(dbapi_connection, _record) -> None:  # SQLite's own limit: writes past it fail with SQLITE_FULL
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(handle.engine, "connect", cap)
    handle.engine.dispose()
    with pytest.raises(PruneSearchError, match=f"cannot write to {path}: the disk is full") as full:
        run_worker(handle, 400)
    assert "free disk space, then rerun the same command" in _one_line(full)
    assert complete_trials(handle.engine, handle.study_id) == 40
    event.remove(handle.engine, "connect", cap)
    handle.engine.dispose()
    run_worker(handle, 80)
    assert complete_trials(handle.engine, handle.study_id) == 80


@pytest.fixture
def tiny_tmpfs(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (root, or a user allowed to mount), unmounted after it."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    unavailable(None if mounted.returncode == 0 else f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # the in-process CLI may hold the file open


def test_start_on_a_real_full_disk_is_one_line_and_resumes_once_space_is_freed(tiny_tmpfs, digits_checkpoint):
    path = tiny_tmpfs / "study.db"
    url = f"sqlite:///{path}"
    start = ("start", "--study", "full", "--storage", url, "--checkpoint", str(digits_checkpoint))
    start += ("--proxy", "taylor_loss", "--population", "20", "--no-progress")
    result = run_cli(*start, "--trials", "100000")
    assert_one_line_error(result, f"cannot write to {path}: the disk is full", "free disk space, then rerun")
    stored = _stored_trials(path)
    assert 0 < stored["COMPLETE"] == stored["valued"] == stored["numbers"] and stored["other"] == 0
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_tmpfs)], check=True)
    target = stored["COMPLETE"] + 100
    assert run_cli(*start, "--trials", str(target)).returncode == 0
    assert _stored_trials(path) == {"COMPLETE": target, "valued": target, "numbers": target, "other": 0}


def _stored_trials(path: Path) -> dict[str, int]:
    """Counts in a study database, read without writing after an integrity check: COMPLETE trials, trials
    with values, distinct trial numbers, trials in any other state."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        complete, other, numbers = conn.execute(
            "SELECT sum(state = 'COMPLETE'), sum(state != 'COMPLETE'), count(DISTINCT number) FROM trials"
        ).fetchone()
        valued = conn.execute("SELECT count(DISTINCT trial_id) FROM trial_values").fetchone()[0]
    conn.close()
    return {"COMPLETE": complete, "valued": valued, "numbers": numbers, "other": other}


# 4. load_pruned checks what it reads -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A pruned resnet20 (untrained) exported as finalize does, with the base model's size recorded."""
    torch.manual_seed(0)
    spec = ModelSpec("resnet20", 1, 10, 8, {})
    model = build_model(spec).eval()
    space = PruningSpace.from_model(model, torch.zeros(2, 1, 8, 8))
    pruned, plan = materialize(model, space, compute_importance(model, space, "l1"), space.smallest())
    out = tmp_path_factory.mktemp("export") / "model"
    base_params = sum(p.numel() for p in model.parameters())
    export(pruned, plan, spec, {"result": {"base_params": base_params}}, out)
    return out


def _edited(exported: Path, tmp_path: Path, name: str, change) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(exported, folder)
    path = folder / name
    if name.endswith(".json"):
        data = json.loads(path.read_text())
        result = change(data)
        path.write_text(result if isinstance(result, str) else json.dumps(data))
    else:
        change(path)
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("name", "change", "needle"),
    [
        ("model.json", lambda d: json.dumps(d)[:40], "model.json is damaged or truncated: not valid JSON"),
        ("plan.json", lambda d: json.dumps(d)[:300], "plan.json is damaged or truncated: not valid JSON"),
        ("plan.json", lambda d: d.pop("history"), "plan.json: the pruning plan is damaged: it lacks 'history'"),
        ("plan.json", lambda d: d.update(kept=[1, 2]), "'kept' is not a map of group names"),
        ("plan.json", lambda d: d.update(input_shape="big"), "'input_shape' is not a list of positive integers"),
        ("plan.json", lambda d: d["history"][0].__setitem__(0, "nowhere"), "plan.json does not fit the model of"),
        ("model.json", lambda d: d.pop("model"), "model.json is not a prune-search model description"),
        ("model.json", lambda d: d["model"].update(num_classes="10"), "model.json is damaged: the stored model spec"),
        ("model.json", lambda d: d["model"].update(num_classes=0), "model.json is damaged: the model has num_classes"),
        ("model.json", lambda d: d["model"].update(options={"width_mult": 2}), "has 1,084,010 parameters, but"),
        ("weights.pt", _truncate, "weights.pt is damaged or truncated"),
        ("weights.pt", lambda p: torch.save({"fc.weight": torch.zeros(1)}, p), "weights.pt does not fit the model"),
    ],
)
def test_load_pruned_names_the_damaged_file_in_one_line(exported, tmp_path, name, change, needle):
    assert prune_search.load_pruned(exported)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    folder = _edited(exported, tmp_path, name, change)
    with pytest.raises(PruneSearchError) as refused:
        prune_search.load_pruned(folder)
    message = _one_line(refused)
    assert needle in message and str(folder) in message


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("model.json", lambda d: d["model"].update(options={"width_mult": 400})),
        ("plan.json", lambda d: d.update(input_shape=[1, 1, 100_000, 100_000])),
    ],
)
def test_load_pruned_refuses_an_absurd_size_before_allocating_it(exported, tmp_path, name, change, monkeypatch):
    folder = _edited(exported, tmp_path, name, change)
    monkeypatch.setattr(torch.nn.Module, "load_state_dict", lambda *_: pytest.fail("loaded an absurd model"))
    monkeypatch.setattr("prune_search.finalize.export.physical_memory", lambda: 64 * 2**30)  # any machine's answer
    started = time.monotonic()
    with pytest.raises(PruneSearchError, match=r"describes an absurd model: .* GiB, more than 50% of this machine"):
        prune_search.load_pruned(folder)
    assert time.monotonic() - started < 5


# 5. finalize checks that it can record its result before it fine-tunes ----------------------------------------------


@pytest.fixture(scope="module")
def small_study(tmp_path_factory, digits_checkpoint):
    folder = tmp_path_factory.mktemp("faults-finalize")
    url = f"sqlite:///{folder / 'study.db'}"
    handle, _ = create_or_join(url, "fin", _options(digits_checkpoint), device="cpu", progress=False)
    run_worker(handle, 40)
    return url, folder / "study.db"


@pytest.mark.parametrize("target", ["out", "artifacts", "storage"])
def test_finalize_that_could_not_record_its_result_is_refused_before_training(
    small_study, tmp_path, monkeypatch, target
):
    url, path = small_study
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out, artifacts = tmp_path / "out", tmp_path / "art"
    if target == "out":
        out = blocker / "out"
    elif target == "artifacts":
        artifacts = blocker / "art"
    else:
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    handle = open_study(url, "fin")
    monkeypatch.setattr("prune_search.finalize.run.fine_tune", lambda *_, **__: pytest.fail("fine-tuned"))
    before = path.read_bytes()
    needle = {
        "out": f"cannot make --out {out}: {blocker} is not a folder",
        "artifacts": f"cannot make --artifact-dir {artifacts}: {blocker} is not a folder",
        "storage": f"cannot write to {path}: it is read-only",
    }[target]
    with pytest.raises(PruneSearchError) as refused:
        finalize_trial(handle, 0, FinalizeConfig(epochs=1), out, artifact_dir=artifacts, progress=False)
    assert needle in _one_line(refused)
    assert not (tmp_path / "out").exists() and not (tmp_path / "art").exists()
    assert path.read_bytes() == before


# 6. Budgets --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("150%", "--max-macs '150%' is more than the base model; a budget lies in (0, 100%]"),
        ("0%", "--max-macs '0%' leaves no budget"),
        ("2M", "--max-macs '2M' (2,000,000 MACs) is more than the base model's 1,000,000 MACs"),
        ("1k", "--max-macs '1k' (1,000 MACs) is below the smallest candidate of the space, 5,000 MACs (0.5% of"),
    ],
)
def test_budgets_outside_the_space_are_refused(text, needle):
    with pytest.raises(PruneSearchError) as refused:
        parse_budget(text, 1_000_000, "--max-macs", 5_000)
    assert needle in _one_line(refused)
    assert parse_budget("100%", 1_000_000, "--max-macs", 5_000) == 1_000_000


def test_start_refuses_a_budget_below_the_smallest_candidate(sqlite_url, digits_checkpoint, monkeypatch):
    monkeypatch.setattr("prune_search.search.study.compute_importance", lambda *_, **__: pytest.fail("computed"))
    with pytest.raises(PruneSearchError, match="--max-params '200%' is more than the base model"):
        create_or_join(sqlite_url, "b", _options(digits_checkpoint, max_params="200%"), device="cpu", progress=False)
    name = f"b-{uuid.uuid4().hex[:6]}"
    with pytest.raises(PruneSearchError, match=r"--max-macs '0.1%' \(.* MACs\) is below the smallest candidate") as low:
        create_or_join(sqlite_url, name, _options(digits_checkpoint, max_macs="0.1%"), device="cpu", progress=False)
    assert "% of the base model); give at least that, or lower --min-ratio" in _one_line(low)
    assert optuna.get_all_study_names(sqlite_url) == []
