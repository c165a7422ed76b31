"""How a study's cost grows with its size: generation time, commands, dashboard and database bytes.

One study per storage (SQLite file; PostgreSQL in a database of its own, dropped afterwards) of the embedded
default's model, ``resnet20`` on digits (untrained weights: they do not change the speed; 12 groups, 24 Optuna
params per trial), default proxy and population 100, is grown to each size in ``--sizes``; at each size the next
``--window`` generations are timed (``run_worker`` in this process, torch on ``--threads`` threads; a fresh worker
each time, whose first generation, which reads the whole study, is shown apart). At the largest size every read
command, and a worker joining for one generation (``start``), runs as a user runs it (a fresh process; wall time
and peak memory), optuna-dashboard and ``prune-search dashboard`` each answer the study page once in full and once
as a poll for new trials after their trial cache expired (the WSGI app in a fresh process, cut off after
``--dashboard-timeout`` s; bytes on the wire as each sends them), and the database's bytes per trial are measured.
``--sizes 1000 2000`` gives the demo's scale.

Run:  python benchmarks/search_scaling.py [--sizes 1000 10000 50000 100000] [--storages sqlite postgresql]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import optuna
import torch
from search_throughput import untrained_checkpoint  # a sibling script: benchmarks/ is on sys.path
from sqlalchemy import create_engine, text

from prune_search.cli.dashboard import MAX_TRIALS
from prune_search.search import StartOptions, create_or_join, run_worker

POSTGRES_ADMIN = "postgresql+psycopg://root@127.0.0.1:5432/test"

DASHBOARD_PROBE = """
import gzip, json, sys, tempfile, time
from wsgiref.util import setup_testing_defaults
import optuna, optuna_dashboard
url, name, served_by, max_trials = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
study_id = optuna.storages.get_storage(url).get_study_id_from_name(name)
if served_by == "prune-search":
    from prune_search.cli.dashboard import CachedTrialsApp, dashboard_app
    app, accept = dashboard_app(CachedTrialsApp(url, tempfile.mkdtemp(), max_trials)), "gzip"
else:
    app, accept = optuna_dashboard.wsgi(url), ""

def get(query):
    environ = {"PATH_INFO": f"/api/studies/{study_id}", "QUERY_STRING": query, "REQUEST_METHOD": "GET",
               "HTTP_ACCEPT_ENCODING": accept}
    setup_testing_defaults(environ)
    started = time.perf_counter()
    body = b"".join(app(environ, lambda *response: None))
    return time.perf_counter() - started, body

full_s, wire = get("after=0")
full = gzip.decompress(wire) if accept else wire
trials = len(json.loads(full)["trials"])
time.sleep(11)  # past optuna-dashboard's 10 s cache of the trials: a browser's poll then reads the study again
poll_s, poll = get(f"after={trials}")
# the process's own peak (VmHWM, Linux): ru_maxrss would count the parent's memory at fork time
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 2**20
print(json.dumps({"full_s": full_s, "full_bytes": len(full), "full_wire": len(wire), "trials": trials,
                  "poll_s": poll_s, "poll_wire": len(poll), "peak_gib": peak}))
"""

MEASURED_RUN = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc, file=sys.stderr)"
)


def generation_seconds(handle, target: int) -> tuple[float, float]:
    """While a fresh worker grows the study to ``target`` trials: its first generation's wall time (s; it reads
    the whole study once) and the mean wall time (s) of each later generation."""
    stamps = [time.perf_counter()]
    run_worker(handle, target, on_generation=lambda _: stamps.append(time.perf_counter()))
    return stamps[1] - stamps[0], float(np.mean(np.diff(stamps[1:])))


def command(args: list[str], folder: Path) -> tuple[float, float, int]:
    """Wall time (s), peak memory (GiB) and exit status of ``prune-search ARGS`` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED_RUN, sys.executable, "-m", "prune_search", *args],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    peak_kib, rc = done.stderr.strip().splitlines()[-1].split()
    return elapsed, int(peak_kib) / 2**20, int(rc)


def dashboard(url: str, name: str, served_by: str, timeout: float, max_trials: int = 0) -> dict | None:
    """The study page's answers (in full, then a poll for new trials once optuna-dashboard's trial cache has
    expired) as ``optuna-dashboard`` or ``prune-search`` (``dashboard_app``: numpy front, cached trials, gzip, a
    study of more than ``max_trials`` trials sampled) serves them, and the probe's peak memory (GiB), from a fresh
    process; None past ``timeout`` s."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", DASHBOARD_PROBE, url, name, served_by, str(max_trials)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def database_bytes(kind: str, url: str, folder: Path) -> int:
    if kind == "sqlite":
        return (folder / "scaling.db").stat().st_size
    with create_engine(url).connect() as conn:
        return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def postgres_database() -> tuple[str, str]:
    """A fresh PostgreSQL database for the run: (its URL, its name)."""
    name = f"scaling_{uuid.uuid4().hex[:8]}"
    with create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}", name


def drop_postgres_database(name: str) -> None:
    with create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def run(kind: str, sizes: list[int], window: int, population: int, timeout: float, folder: Path) -> None:
    url, db_name = (f"sqlite:///{folder / 'scaling.db'}", None) if kind == "sqlite" else postgres_database()
    try:
        options = StartOptions(checkpoint=untrained_checkpoint(folder, "resnet20"), population=population)
        handle, _ = create_or_join(url, "scaling", options, device="cpu", progress=False)
        rows = []
        for size in sizes:
            started = time.perf_counter()
            run_worker(handle, size)
            fill = time.perf_counter() - started
            first, per_generation = generation_seconds(handle, size + window * population)
            rows.append((size, per_generation, first))
            print(f"  {kind}: {size:,} trials (filled in {fill:.0f} s), {per_generation:.3f} s/generation", flush=True)
        held = size + window * population
        print()
        print(f"### {kind}")
        print()
        print("| trials | s / generation | trials/s | vs the first size | a joining worker's first generation, s |")
        print("|---|---|---|---|---|")
        for size, seconds, first in rows:
            ratio = seconds / rows[0][1]
            print(f"| {size:,} | {seconds:.3f} | {population / seconds:,.0f} | {ratio:.2f}× | {first:.2f} |")
        print()
        print(f"At {held:,} trials (each a fresh process, as a user runs it; `start` then adds {population}):")
        print()
        print("| command | wall s | peak memory GiB | exit |")
        print("|---|---|---|---|")
        report = folder / f"report-{kind}.html"
        for args in (
            ["front", "--study", "scaling", "--storage", url, "--format", "csv"],
            ["status", "--study", "scaling", "--storage", url],
            ["studies", "--storage", url],
            ["report", "--study", "scaling", "--storage", url, "--out", str(report)],
            ["--help"],
            ["start", "--study", "scaling", "--storage", url, "--trials", str(held + population), "--no-progress"],
        ):
            seconds, peak, rc = command(args, folder)
            print(f"| `{args[0]}` | {seconds:.1f} | {peak:.2f} | {rc} |")
        held += population  # the joining worker's generation
        size_mb = report.stat().st_size / 1e6 if report.exists() else float("nan")
        stored = database_bytes(kind, url, folder)
        print()
        print(f"report: {size_mb:.1f} MB; database: {stored / 1e6:.0f} MB, {stored / held:,.0f} bytes per trial")
        servers = (
            ("optuna-dashboard", 0, "optuna-dashboard"),
            ("prune-search", 0, "`prune-search dashboard --max-trials 0` (every trial)"),
            ("prune-search", MAX_TRIALS, f"`prune-search dashboard` (default `--max-trials {MAX_TRIALS:,}`)"),
        )
        for served_by, max_trials, title in servers:
            answer = dashboard(url, "scaling", served_by, timeout, max_trials)
            if answer is None:
                print(f"{title} study answer: no answer within {timeout:.0f} s")
                continue
            print(
                f"{title} study answer: {answer['trials']:,} trials, {answer['full_bytes'] / 1e6:.1f} MB in "
                f"{answer['full_s']:.1f} s ({answer['full_bytes'] / answer['trials']:,.0f} bytes per trial; on the "
                f"wire {answer['full_wire'] / answer['trials']:,.0f}); a poll for new trials after 11 s: "
                f"{answer['poll_s']:.1f} s, {answer['poll_wire'] / 1e3:.1f} KB on the wire; peak memory "
                f"{answer['peak_gib']:.2f} GiB"
            )
        print()
    finally:
        if db_name is not None:
            drop_postgres_database(db_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000, 100000])
    parser.add_argument("--storages", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--window", type=int, default=20, help="Generations timed at each size.")
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dashboard-timeout", type=float, default=600.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    print(
        f"resnet20 on digits (untrained), population {args.population}, default proxy; {args.window} generations "
        f"timed at each size; torch threads {args.threads}"
    )
    for kind in args.storages:
        with tempfile.TemporaryDirectory(prefix="search-scaling-") as folder:
            run(kind, sorted(args.sizes), args.window, args.population, args.dashboard_timeout, Path(folder))


if __name__ == "__main__":
    main()
