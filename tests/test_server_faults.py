"""Faults of a real database server (issue 17): workers on a PostgreSQL server of the test's own ride out a killed
peer and a server restart; an outage past the retry window ends in one line, and the same command resumes.

The server runs from a folder of its own, on a port of its own (never the machine's server), as the ``postgres``
user when the tests run as root (initdb refuses root); it is stopped and its folder removed at the end.
"""

import os
import pwd
import select
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from shutil import rmtree

import pytest
from cli_helpers import assert_one_line_error
from services import postgres_binaries_missing, unavailable
from sqlalchemy import create_engine, text
from test_search import _assert_exact, _workers

PASSWORD = "not-for-print"  # trust auth ignores it; the output must never show it


class OwnServer:
    """A PostgreSQL server in ``folder`` (initdb with trust auth) on a free port of 127.0.0.1, started and stopped
    (immediate mode: as in a crash or a lost host) at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.running = False
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def _run(self, *command: str, check: bool = True) -> None:
        if os.geteuid() == 0:
            command = ("runuser", "-u", "postgres", "--", *command)
        done = subprocess.run(command, cwd=self.folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 or not check, done.stdout + done.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w", "start")
        self.running = True

    def stop(self, check: bool = True) -> None:
        """Stop the server at once (``check``: it must have been running)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=check)
        self.running = False

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="module")
def own_server():
    """A running :class:`OwnServer` for the module; stopped, its folder removed, whatever the tests did."""
    unavailable(postgres_binaries_missing())
    folder = Path(tempfile.mkdtemp(prefix="prune-search-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    server = None
    try:
        server = OwnServer(folder)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop(check=False)  # also a server whose start failed half-way
        rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_database(own_server):
    """A new, empty database on the running own server (started again if a failed test left it stopped)."""
    if not own_server.running:
        own_server.start()
    name = f"ps_{uuid.uuid4().hex[:12]}"
    admin = create_engine(own_server.url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    return own_server.url(name)


def _wait_for_trials(url: str, name: str, count: int, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    """Wait until study ``name`` holds at least ``count`` COMPLETE trials, every worker of ``procs`` running."""
    engine = create_engine(url)
    query = text(
        "select count(*) from trials t join studies s on s.study_id = t.study_id "
        "where s.study_name = :n and t.state = 'COMPLETE'"
    )
    deadline = time.monotonic() + timeout
    held = 0
    try:
        while held < count and time.monotonic() < deadline:
            time.sleep(0.5)
            ended = [p for p in procs if p.poll() is not None]
            assert not ended, f"a worker ended early: {ended[0].communicate()[1][-800:]}"
            with engine.connect() as conn:
                tables = conn.execute(text("select to_regclass('trials') is not null")).scalar_one()
                held = conn.execute(query, {"n": name}).scalar_one() if tables else 0
    finally:
        engine.dispose()
    assert held >= count, f"the study holds {held} complete trials after {timeout} s, not {count}"


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[subprocess.CompletedProcess]:
    """Each worker's exit status and output; a worker still running at ``timeout`` is killed."""
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.mark.db
@pytest.mark.slow
def test_workers_ride_out_a_killed_peer_and_a_server_restart(own_server, own_database, digits_checkpoint, tmp_path):
    """Three workers; one SIGKILLed mid-run, then the server down for 8 s: the other two keep running through
    the outage and finish with exit 0 at exactly N distinct COMPLETE trials numbered 0..N-1, and the killed
    worker's own command, run again, exits 0 adding none."""
    # a worker adds about 400 trials/s on a quiet machine: N leaves the server's stop (~0.3 s) seconds of margin
    url, name, target = own_database, "restart", 6000
    procs = _workers(url, name, digits_checkpoint, 3, target, tmp_path)
    victim, survivors = procs[0], procs[1:]
    try:
        _wait_for_trials(url, name, 200, procs)
        assert victim.poll() is None, "the worker to kill has already ended"
        victim.kill()
        victim.communicate()
        own_server.stop()
        time.sleep(8)
        ended = [p for p in survivors if p.poll() is not None]
        assert not ended, f"a worker ended during the outage: exit {ended[0].returncode}, {ended[0].communicate()}"
        own_server.start()
    finally:
        results = _finish(survivors, timeout=300)
    assert all(r.returncode == 0 for r in results), [r.stderr[-800:] for r in results]
    _assert_exact(url, name, target)
    (again,) = _finish(_workers(url, name, digits_checkpoint, 1, target, tmp_path), timeout=300)
    assert again.args == victim.args
    assert again.returncode == 0, again.stderr[-800:]
    assert "this worker added 0 trials" in again.stdout
    _assert_exact(url, name, target)


@pytest.mark.db
def test_an_outage_past_the_retry_window_ends_in_one_line_and_the_same_command_resumes(
    own_server, own_database, digits_checkpoint, tmp_path, monkeypatch
):
    """With ``PRUNE_SEARCH_RETRY_S=5`` a worker whose server stays down exits 2 with one ``error:`` line (the
    storage unreachable, what is stored stays, rerun), no traceback and no password; once the server is back the
    same command finishes the study at exactly N distinct COMPLETE trials."""
    monkeypatch.setenv("PRUNE_SEARCH_RETRY_S", "5")
    url, name, target = own_database, "outage", 4000  # not finished before the server stops (~400 trials/s)
    (worker,) = _workers(url, name, digits_checkpoint, 1, target, tmp_path)
    try:
        _wait_for_trials(url, name, 80, [worker])
        own_server.stop()
        started = time.monotonic()
    finally:
        (lost,) = _finish([worker], timeout=60)
    assert time.monotonic() - started < 30
    assert_one_line_error(
        lost, f"storage {url.replace(PASSWORD, '***')} is unreachable", "what is stored stays", "rerun the same command"
    )
    assert PASSWORD not in lost.stdout + lost.stderr
    own_server.start()
    (again,) = _finish(_workers(url, name, digits_checkpoint, 1, target, tmp_path), timeout=300)
    assert again.args == lost.args
    assert again.returncode == 0, again.stderr[-800:]
    _assert_exact(url, name, target)


@pytest.mark.db
def test_a_worker_started_while_the_server_is_down_waits_for_it_and_finishes(
    own_server, own_database, digits_checkpoint, tmp_path
):
    """A worker started while its server is down says so on one line and waits (a scheduler may start workers
    while the database restarts); once the server answers it creates the study and finishes it at exactly N
    distinct COMPLETE trials, without showing the password."""
    url, name, target = own_database, "late", 300
    own_server.stop()
    (worker,) = _workers(url, name, digits_checkpoint, 1, target, tmp_path)
    try:  # the server comes back once the worker said it waits (its imports take seconds on a busy machine)
        ready, _, _ = select.select([worker.stderr], [], [], 120)
        waiting = worker.stderr.readline() if ready else ""
        assert f"storage {url.replace(PASSWORD, '***')} does not answer" in waiting, waiting
        assert worker.poll() is None, f"the worker did not wait for the server: {worker.communicate()}"
        own_server.start()
    finally:
        (done,) = _finish([worker], timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    assert PASSWORD not in done.stdout + waiting + done.stderr
    _assert_exact(url, name, target)


@pytest.mark.db
def test_a_worker_whose_server_stays_down_ends_in_one_line_after_the_window(
    own_server, own_database, digits_checkpoint, tmp_path, monkeypatch
):
    """With ``PRUNE_SEARCH_RETRY_S=3`` a worker whose server never answers exits 2 after about that long, with
    the waiting line and one ``error:`` line saying nothing was written."""
    monkeypatch.setenv("PRUNE_SEARCH_RETRY_S", "3")
    url = own_database
    own_server.stop()
    started = time.monotonic()
    (lost,) = _finish(_workers(url, "never", digits_checkpoint, 1, 10, tmp_path), timeout=60)
    assert 3 <= time.monotonic() - started < 40
    assert lost.returncode == 2, lost.stderr
    lines = lost.stderr.strip().splitlines()
    assert len(lines) == 2 and "does not answer" in lines[0], lines
    assert lines[1].startswith("error: ") and "did not answer within 3 s" in lines[1], lines
    assert "nothing was written: rerun the same command" in lines[1], lines
    assert PASSWORD not in lost.stdout + lost.stderr
