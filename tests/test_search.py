"""The search service: exact trial counts, many workers on real databases, kills, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import optuna
import pytest
from cli_helpers import assert_one_line_error, run_cli
from pymoo.indicators.hv import HV
from services import MARIADB, POSTGRES
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from prune_search.errors import PruneSearchError
from prune_search.evaluators import ProxyEvaluator
from prune_search.report.data import collect
from prune_search.search import StartOptions, create_or_join, nsga2, open_study, run_worker
from prune_search.search import archive as archive_module
from prune_search.search.front import REFERENCE, normaliser
from prune_search.search.status import status
from prune_search.search.stored import open_stored
from prune_search.search.stored_front import stored_front_rows
from prune_search.search.summary import front_rows, load_archive


@pytest.fixture(scope="module")
def checkpoint(digits_checkpoint):
    return digits_checkpoint


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _options(checkpoint, **kwargs) -> StartOptions:
    """Small studies with the Taylor proxy (no fitness table to measure: that has tests of its own)."""
    kwargs = {"proxy": "taylor_loss", **kwargs}
    return StartOptions(evaluations=0, checkpoint=checkpoint, population=40, calibration_batches=2, **kwargs)


def _assert_exact(url: str, name: str, target: int) -> None:
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == target
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(target))
    models = {json.dumps(t.params, sort_keys=True) for t in trials}
    assert len(models) == target, "a candidate was evaluated twice"


@pytest.mark.slow
def test_one_worker_on_sqlite_reaches_exactly_n_distinct_trials(sqlite_url, checkpoint):
    handle, created = create_or_join(sqlite_url, "one", _options(checkpoint), device="cpu", progress=False)
    assert created
    added = run_worker(handle, 333, seed=1)
    assert added == 333
    _assert_exact(sqlite_url, "one", 333)
    trial = optuna.load_study(study_name="one", storage=sqlite_url).trials[50]
    assert set(trial.user_attrs) == {
        "keep",
        "macs",
        "params",
        "macs_pct",
        "params_pct",
        "generation",
        "worker",
        *(f"proxy_{name}" for name in ProxyEvaluator(handle.space, handle.importance, "cpu", handle.fitness).available),
    }
    assert trial.values[1] == trial.user_attrs["macs"]
    from_params = handle.space.from_params(trial.params)
    assert trial.user_attrs["keep"] == " ".join(map(str, from_params.keep[0].tolist()))
    handle2, created2 = create_or_join(sqlite_url, "one", StartOptions(), device="cpu", progress=False)
    assert not created2
    assert run_worker(handle2, 333) == 0
    assert run_worker(handle2, 400) == 67
    _assert_exact(sqlite_url, "one", 400)


@pytest.mark.slow
def test_constraints_are_honoured_by_the_front(sqlite_url, checkpoint):
    handle, _ = create_or_join(sqlite_url, "budget", _options(checkpoint, max_macs="30%"), device="cpu", progress=False)
    run_worker(handle, 300)
    rows = front_rows(handle)
    assert rows
    assert all(row["macs_pct"] <= 30.0 for row in rows)
    study = optuna.load_study(study_name="budget", storage=sqlite_url)
    assert all(t.user_attrs["macs_pct"] <= 30.0 for t in study.best_trials)
    assert any(t.constraints["macs"] > 0 for t in study.trials)


def test_interrupted_start_resumes_the_same_population(sqlite_url, checkpoint):
    handle, _ = create_or_join(sqlite_url, "resume", _options(checkpoint), device="cpu", progress=False)

    class Stop(Exception):
        pass

    def stop_at_third(report):
        if report.generation == 2:
            raise Stop

    with pytest.raises(Stop):
        run_worker(handle, 1000, seed=3, on_generation=stop_at_third)
    before = load_archive(handle)
    population = set(before.numbers[nsga2.survivors(before.F, before.violation, 40)].tolist())
    reopened = open_study(sqlite_url, "resume")
    after = load_archive(reopened)
    assert set(after.numbers[nsga2.survivors(after.F, after.violation, 40)].tolist()) == population
    generations = []
    run_worker(reopened, 200, seed=3, on_generation=lambda r: generations.append(r.generation))
    assert generations[0] == 3
    _assert_exact(sqlite_url, "resume", 200)


def _workers(url: str, name: str, checkpoint, count: int, target: int, tmp_path) -> list[subprocess.Popen]:
    env = {**os.environ, "PRUNE_SEARCH_CACHE": str(tmp_path)}
    args = ["--study", name, "--storage", url, "--trials", str(target), "--no-progress", "--device", "cpu"]
    # workers racing to create a study: the first claims its name and prepares it, the others wait for it
    create = ["--checkpoint", str(checkpoint), "--population", "40", "--calibration-batches", "2"]
    create += ["--proxy", "taylor_loss", "--evaluations", "8"]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "prune_search", "start", *args, *create, "--seed", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]


@pytest.mark.slow
def test_four_worker_processes_share_one_fresh_database(fresh_database, checkpoint, tmp_path):
    url, name = fresh_database, _name()
    procs = _workers(url, name, checkpoint, 4, 1200, tmp_path)
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outputs]
    _assert_exact(url, name, 1200)
    info = status(open_stored(url, name))
    assert len(info["workers"]) == 4
    assert sum(w["trials"] for w in info["workers"]) == 1200
    assert info["trials"] == {"COMPLETE": 1200}
    assert info["evaluations"] == {"budget": 8, "measured": 8, "claimed": 8}  # shared, none measured twice


@pytest.mark.slow
def test_four_worker_processes_share_one_sqlite_file_without_lock_errors(sqlite_url, checkpoint, tmp_path):
    """Four worker processes on one SQLite file all exit 0 at exactly N distinct COMPLETE trials, and none of
    them reports "database is locked" (SQLite's write lock is waited for, not failed on)."""
    name = _name()
    procs = _workers(sqlite_url, name, checkpoint, 4, 800, tmp_path)
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outputs]
    assert not any("database is locked" in out + err for out, err in outputs)
    _assert_exact(sqlite_url, name, 800)
    assert status(open_stored(sqlite_url, name))["trials"] == {"COMPLETE": 800}


@pytest.mark.db
@pytest.mark.slow
def test_a_killed_worker_loses_no_trial_and_the_study_still_reaches_n(checkpoint, tmp_path):
    name = _name()
    engine = create_engine(POSTGRES)
    (victim,) = _workers(POSTGRES, name, checkpoint, 1, 200_000, tmp_path)
    seen = 0
    deadline = time.monotonic() + 240
    while seen < 400 and time.monotonic() < deadline:
        time.sleep(0.5)
        with engine.connect() as conn:
            seen = (
                conn.execute(
                    text(
                        "select count(*) from trials t join studies s on s.study_id = t.study_id "
                        "where s.study_name = :n and t.state = 'COMPLETE'"
                    ),
                    {"n": name},
                ).scalar_one_or_none()
                or 0
            )
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert seen >= 400
    survivors = optuna.load_study(study_name=name, storage=POSTGRES).get_trials(deepcopy=False)
    assert len(survivors) >= seen
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in survivors)
    target = len(survivors) + 300
    (finisher,) = _workers(POSTGRES, name, checkpoint, 1, target, tmp_path)
    _, err = finisher.communicate(timeout=300)
    assert finisher.returncode == 0, err[-800:]
    _assert_exact(POSTGRES, name, target)
    evaluations = status(open_stored(POSTGRES, name))["evaluations"]
    assert evaluations["measured"] == evaluations["claimed"] <= 8, evaluations  # the killed claim was taken over


def test_joining_with_a_contradicting_flag_is_refused(sqlite_url, checkpoint, tmp_path):
    create_or_join(sqlite_url, "fixed", _options(checkpoint), device="cpu", progress=False)
    result = run_cli("start", "--study", "fixed", "--storage", sqlite_url, "--model", "resnet56", "--no-progress")
    assert_one_line_error(result, "--model resnet56", "the study has resnet20")
    with pytest.raises(PruneSearchError, match="--population 64"):
        create_or_join(sqlite_url, "fixed", StartOptions(population=64), device="cpu")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql+psycopg://alice:s3cr3t-pw@127.0.0.1:1/test", "cannot connect to storage"),
        ("mysql+pymysql://bob:s3cr3t-pw@127.0.0.1:1/test", "cannot connect to storage"),
        ("not a url at all", "malformed"),
        ("postgresql+nodriver://carol:s3cr3t-pw@127.0.0.1/test", "install the driver"),
    ],
)
def test_bad_storage_urls_give_one_line_without_the_password(url, needle):
    result = run_cli("status", "--study", "x", "--storage", url)
    assert_one_line_error(result, needle)
    assert "s3cr3t-pw" not in result.stderr + result.stdout


@pytest.mark.db
@pytest.mark.parametrize("server", [POSTGRES, MARIADB], ids=["postgresql", "mariadb"])
def test_start_fails_at_once_on_a_server_that_answers_with_a_refusal(server):
    """A worker waits for a server that is down, not for one that answers: an unknown database ends ``start``
    in one line at once, nothing created."""
    url = server.rsplit("/", 1)[0] + f"/no_such_db_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    result = run_cli("start", "--study", "x", "--storage", url, "--no-progress")
    assert time.monotonic() - started < 10
    assert_one_line_error(result, "cannot connect to storage")
    assert "does not answer" not in result.stderr


@pytest.mark.slow
def test_optuna_cli_and_our_commands_read_the_study(sqlite_url, checkpoint):
    handle, _ = create_or_join(sqlite_url, "shown", _options(checkpoint), device="cpu", progress=False)
    run_worker(handle, 150)
    optuna_cli = os.path.join(os.path.dirname(sys.executable), "optuna")
    names = subprocess.run(
        [optuna_cli, "studies", "--storage", sqlite_url, "-f", "json"], capture_output=True, text=True
    )
    assert names.returncode == 0, names.stderr
    assert json.loads(names.stdout)[0]["name"] == "shown"
    best = subprocess.run(
        [optuna_cli, "best-trials", "--study-name", "shown", "--storage", sqlite_url, "-f", "json"],
        capture_output=True,
        text=True,
    )
    assert best.returncode == 0, best.stderr
    numbers = sorted(t["number"] for t in json.loads(best.stdout))
    front = run_cli("front", "--study", "shown", "--storage", sqlite_url, "--format", "json")
    assert front.returncode == 0, front.stderr
    assert sorted(r["trial"] for r in json.loads(front.stdout)) == numbers
    csv_out = run_cli("front", "--study", "shown", "--storage", sqlite_url, "--format", "csv").stdout.splitlines()
    assert len(csv_out) == len(numbers) + 1
    assert "keep/conv1" in csv_out[0]
    limited = run_cli("front", "--study", "shown", "--storage", sqlite_url, "--limit", "3", "--format", "json")
    picked = json.loads(limited.stdout)
    assert len(picked) == 3 and picked[0]["trial"] == json.loads(front.stdout)[0]["trial"]
    table = run_cli("front", "--study", "shown", "--storage", sqlite_url, "--limit", "3").stdout.splitlines()
    assert table[0] == f"front of study 'shown': 3 of {len(numbers)} trials; groups, in the order of the keep columns:"
    assert table[1].startswith("  conv1, ")
    assert_one_line_error(run_cli("front", "--study", "shown", "--storage", sqlite_url, "--limit", "0"), "--limit")
    recomputed = front_rows(handle)
    assert [(r["trial"], r["keep"], r["strategy"], r["macs"]) for r in recomputed] == [
        (r["trial"], r["keep"], r["strategy"], r["macs"]) for r in json.loads(front.stdout)
    ]  # read from what the trials stored, equal to the rows recomputed from the space
    assert json.loads(front.stdout)[0]["score"] == pytest.approx(recomputed[0]["score"], rel=1e-5)
    shown = run_cli("status", "--study", "shown", "--storage", sqlite_url, "--format", "json")
    info = json.loads(shown.stdout)
    assert info["trials"] == {"COMPLETE": 150}
    assert info["hypervolume"] > 0
    assert [h["trials"] for h in info["history"]] == sorted(h["trials"] for h in info["history"])
    listed = run_cli("studies", "--storage", sqlite_url).stdout
    assert "shown\t150 trials\tprune-search" in listed


def test_unknown_study_lists_what_is_there(sqlite_url, checkpoint):
    create_or_join(sqlite_url, "present", _options(checkpoint), device="cpu", progress=False)
    assert_one_line_error(run_cli("front", "--study", "absent", "--storage", sqlite_url), "studies there: present")


def _non_dominated(points: np.ndarray) -> np.ndarray:
    """Rows of ``points`` (minimised) that no other row dominates, by brute force."""
    le = (points[:, None, :] <= points[None, :, :]).all(-1)
    lt = (points[:, None, :] < points[None, :, :]).any(-1)
    dominated = (le & lt).any(0)
    return points[~dominated]


@pytest.mark.slow
def test_front_recomputes_the_rows_of_an_older_study_whose_trials_hold_keep_dicts(sqlite_url, checkpoint):
    handle, _ = create_or_join(sqlite_url, "older", _options(checkpoint), device="cpu", progress=False)
    run_worker(handle, 60)
    expected = front_rows(handle)
    attrs = optuna.storages._rdb.models.TrialUserAttributeModel.__table__
    with handle.engine.begin() as conn:  # an older version stored the keep counts as a dict, without costs
        for row in expected:
            trial_id = handle.study.trials[row["trial"]]._trial_id
            where = (attrs.c.trial_id == trial_id) & (attrs.c.key == "keep")
            conn.execute(attrs.update().where(where).values(value_json=json.dumps(row["keep"])))
            conn.execute(attrs.delete().where((attrs.c.trial_id == trial_id) & (attrs.c.key == "macs")))
    assert stored_front_rows(open_stored(sqlite_url, "older")) is None
    shown = run_cli("front", "--study", "older", "--storage", sqlite_url, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert [(r["trial"], r["keep"], r["macs"]) for r in json.loads(shown.stdout)] == [
        (r["trial"], r["keep"], r["macs"]) for r in expected
    ]
    reported = collect(open_stored(sqlite_url, "older"))  # the report recomputes them too
    assert [(r["trial"], r["keep"], r["macs"]) for r in reported.front] == [
        (r["trial"], r["keep"], r["macs"]) for r in expected
    ]


def test_hypervolume_history_is_the_front_of_the_stored_trials_and_grows(sqlite_url, checkpoint):
    handle, _ = create_or_join(sqlite_url, "hv", _options(checkpoint), device="cpu", progress=False)
    run_worker(handle, 600)
    history = status(handle)["history"]
    trials = optuna.load_study(study_name="hv", storage=sqlite_url).get_trials(deepcopy=False)
    assert all(not t.system_attrs for t in trials)  # no constraints: every trial is feasible
    scale = normaliser(handle.config)
    for entry in history:
        upto = [t.values for t in trials if t.user_attrs["generation"] <= entry["generation"]]
        assert len(upto) == entry["trials"]
        front = _non_dominated(np.array(upto) / scale)
        expected = HV(ref_point=np.full(front.shape[1], REFERENCE))(front)
        assert entry["hypervolume"] == pytest.approx(expected, rel=1e-9)
    assert history[-1]["hypervolume"] > history[0]["hypervolume"]


@pytest.mark.slow
def test_embedded_default_start_works_offline_with_no_flags(tmp_path):
    result = run_cli(
        "start", "--study", "demo", "--no-progress", cwd=tmp_path, env={"PRUNE_SEARCH_CACHE": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "created study 'demo' in sqlite:///prune-search.db" in result.stdout
    assert "optuna-dashboard 'sqlite:///prune-search.db'" in result.stdout
    assert (tmp_path / "baselines" / "digits-resnet20.pt").is_file()
    _assert_exact(f"sqlite:///{tmp_path / 'prune-search.db'}", "demo", 2000)
    again = run_cli(
        "start", "--study", "demo", "--no-progress", cwd=tmp_path, env={"PRUNE_SEARCH_CACHE": str(tmp_path)}
    )
    assert "joined study 'demo'" in again.stdout
    assert "this worker added 0 trials" in again.stdout


def test_a_failed_creation_leaves_no_study_behind(sqlite_url, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(PruneSearchError):
        create_or_join(sqlite_url, "broken", StartOptions(checkpoint=broken), device="cpu", progress=False)
    assert optuna.get_all_study_names(sqlite_url) == []


@pytest.mark.parametrize("command", ["status", "front", "studies"])
def test_reading_a_missing_sqlite_file_says_so_and_creates_nothing(command, tmp_path):
    missing = tmp_path / "nope.db"
    args = [command, "--storage", f"sqlite:///{missing}"] + ([] if command == "studies" else ["--study", "x"])
    assert_one_line_error(run_cli(*args), f"no database file {missing}", "prune-search start")
    assert not missing.exists()


def _stored_trials(sqlite_url: str) -> int:
    """Trials in the SQLite file, counted without loading them (0 before the tables exist)."""
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM trials")).scalar_one())
    except OperationalError:
        return 0
    finally:
        engine.dispose()


def test_ctrl_c_says_what_is_stored_and_how_to_resume(sqlite_url, checkpoint, tmp_path):
    args = ["start", "--study", "stop", "--storage", sqlite_url, "--trials", "200000", "--no-progress"]
    args += ["--checkpoint", str(checkpoint), "--proxy", "taylor_loss", "--evaluations", "0", "--device", "cpu"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "prune_search", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a shell running the tests in the background makes its children ignore SIGINT
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _stored_trials(sqlite_url):
        time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    held = _stored_trials(sqlite_url)
    assert held > 0
    assert err.strip().splitlines()[-1] == (
        f"interrupted: study 'stop' holds {held} complete trials (every stored generation is whole); "
        "rerun the same command to resume"
    )


def test_an_archive_catches_up_in_chunks_and_holds_every_row_once(sqlite_url, checkpoint, monkeypatch):
    handle, _ = create_or_join(sqlite_url, "chunks", _options(checkpoint), device="cpu", progress=False)
    run_worker(handle, 80)
    whole = load_archive(handle)
    monkeypatch.setattr(archive_module, "REFRESH_ROWS", 7)  # 80 rows: 11 full reads and a short one
    chunked = load_archive(handle)
    assert len(chunked) == len(whole) == 80
    for name in ("X", "F", "violation", "generation", "numbers", "trial_ids"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    assert chunked.keys == whole.keys and len(chunked.digests) == len(set(whole.keys))
    run_worker(handle, 120)
    assert chunked.refresh() == 40 and chunked.refresh() == 0
    assert sorted(chunked.numbers.tolist()) == list(range(120))
