"""optuna-dashboard (its WSGI app, headless) and the HTML report on real studies."""

import base64
import contextlib
import gzip
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from wsgiref.util import setup_testing_defaults

import numpy as np
import optuna
import optuna_dashboard
import pytest
from cli_helpers import run_cli
from optuna.artifacts import FileSystemArtifactStore
from optuna.study import StudyDirection
from optuna.trial import TrialState
from optuna_dashboard._pareto_front import get_pareto_front_trials as dashboard_front
from plotly.offline import get_plotlyjs
from services import MARIADB, POSTGRES, new_database

from prune_search.cli.dashboard import CachedTrialsApp, dashboard_app, pareto_front_trials
from prune_search.finalize import FinalizeConfig, choose, finalize_trial
from prune_search.report import figures, write_report
from prune_search.report.data import collect, recomputed
from prune_search.report.html import FIGURE_SCRIPT
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.search.stored import open_stored
from prune_search.search.study_note import update_study_note
from prune_search.search.summary import front_rows
from prune_search.storage.optuna_tables import IndexedTrial, set_finished_user_attrs
from prune_search.storage.sampled_trials import choose_sample
from prune_search.storage.study_data import revisions


@pytest.fixture(scope="module")
def checkpoint(digits_checkpoint):
    return digits_checkpoint


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.db)])
def finalized_study(request, checkpoint, tmp_path_factory):
    """A small finalized study, in a SQLite file or a database of its own on PostgreSQL."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        yield _finalized(f"sqlite:///{folder / 'study.db'}", checkpoint, folder)
    else:
        with new_database(POSTGRES) as url:
            yield _finalized(url, checkpoint, folder)


def _finalized(url: str, checkpoint, folder):
    name = f"inspect-{uuid.uuid4().hex[:8]}"
    options = StartOptions(evaluations=0, checkpoint=checkpoint, population=40, calibration_batches=2)
    handle, _ = create_or_join(url, name, options, device="cpu", progress=False)
    run_worker(handle, 200)
    update_study_note(handle)
    number = choose(handle, use_knee=True)[0][0]
    artifacts = folder / "artifacts"
    finalize_trial(handle, number, FinalizeConfig(epochs=1), folder / "out", artifact_dir=artifacts, progress=False)
    return handle, url, artifacts, number, folder


def _get(app, path: str, headers: dict[str, str] | None = None) -> tuple[str, bytes]:
    return _answer(app, path, headers)[::2]


def _answer(app, path: str, headers: dict[str, str] | None = None) -> tuple[str, dict[str, str], bytes]:
    """Status line, headers and body of ``GET path`` (``headers``: extra ``HTTP_*`` request headers)."""
    status = {}

    def start(line, response_headers, exc_info=None):
        status.update(line=line, headers=dict(response_headers))

    route, _, query = path.partition("?")
    environ = {"PATH_INFO": route, "QUERY_STRING": query, **(headers or {})}
    setup_testing_defaults(environ)
    body = b"".join(app(environ, start))
    return status["line"], status["headers"], body


def test_the_dashboard_command_gzips_the_study_answer_and_an_idle_poll_is_empty(finalized_study):
    """What ``prune-search dashboard`` serves is optuna-dashboard's answer, byte for byte once decompressed,
    at ≤ 2 KB per trial on the wire; a client that does not accept gzip gets it plain; asked again with the
    answer's ETag (as a browser revalidates), an unchanged study answers 304 without a body."""
    handle, url, artifacts, _, _ = finalized_study
    plain_app = optuna_dashboard.wsgi(url, artifact_store=FileSystemArtifactStore(str(artifacts)))
    app = dashboard_app(CachedTrialsApp(url, str(artifacts)))
    path = f"/api/studies/{handle.study_id}"
    status, headers, body = _answer(app, path, {"HTTP_ACCEPT_ENCODING": "gzip, deflate"})
    assert status.startswith("200") and headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body)
    study = json.loads(gzip.decompress(body))
    assert study["trials"] and study == json.loads(_get(plain_app, path)[1])
    assert len(body) / len(study["trials"]) <= 2048
    status, headers, plain = _answer(app, path)
    assert "Content-Encoding" not in headers and json.loads(plain) == study
    poll = f"{path}?after={len(study['trials'])}"
    status, headers, _ = _answer(app, poll, {"HTTP_ACCEPT_ENCODING": "gzip"})
    assert status.startswith("200") and headers["Cache-Control"] == "no-cache"
    again = {"HTTP_ACCEPT_ENCODING": "gzip", "HTTP_IF_NONE_MATCH": headers["ETag"]}
    status, _, body = _answer(app, poll, again)
    assert status.startswith("304") and body == b""


@pytest.mark.parametrize("objectives", [2, 3])
def test_the_dashboard_command_ranks_the_front_as_optuna_dashboard_does(objectives):
    """Ties, duplicates, a maximised objective and unfinished trials: the numpy ranking returns exactly the
    trials, in the same order, that optuna-dashboard's own pure-Python ranking returns."""
    rng = np.random.default_rng(objectives)
    directions = [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE][:objectives]
    distributions = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    trials = []
    for number in range(400):
        state = TrialState.COMPLETE if number % 17 else TrialState.FAIL
        costs = rng.integers(0, 8, objectives)  # each minimised: the first trades off against the others
        costs[0] = 20 - costs[1:].sum() + rng.integers(0, 3)
        values = [-c if d == StudyDirection.MAXIMIZE else c for c, d in zip(costs.tolist(), directions, strict=True)]
        values = [float(v) for v in values] if state == TrialState.COMPLETE else None
        trial = optuna.trial.create_trial(state=state, values=values, params={"x": 0.5}, distributions=distributions)
        trial.number = number
        trials.append(trial)
    ours = [t.number for t in pareto_front_trials(trials, directions)]
    theirs = [t.number for t in dashboard_front(trials, directions)]
    assert ours == theirs
    assert len(ours) > 10


def test_the_dashboard_command_shows_new_trials_and_later_writes_to_finished_ones(checkpoint, sqlite_url, tmp_path):
    """``prune-search dashboard`` caches finished trials and reads only new ones; a result written to a finished
    trial later (as ``finalize`` and the measured fidelity write) still shows on the next poll."""
    options = StartOptions(evaluations=0, checkpoint=checkpoint, population=20, calibration_batches=2)
    handle, _ = create_or_join(sqlite_url, "cached", options, device="cpu", progress=False)
    run_worker(handle, 40)
    app = dashboard_app(CachedTrialsApp(sqlite_url, str(tmp_path / "artifacts")))
    path = f"/api/studies/{handle.study_id}"

    def trials() -> list[dict]:
        time.sleep(2.1)  # past optuna-dashboard's own cache of a study's trials (2 s below 100 trials)
        status, body = _get(app, path)
        assert status.startswith("200")
        return json.loads(body)["trials"]

    assert len(trials()) == 40
    run_worker(handle, 80)
    assert len(trials()) == 80
    first = optuna.load_study(study_name="cached", storage=sqlite_url).trials[0]
    set_finished_user_attrs(handle.engine, first._trial_id, {"finalized.test_acc": 0.5})
    shown = next(t for t in trials() if t["number"] == first.number)
    assert {a["key"]: a["value"] for a in shown["user_attrs"]}["finalized.test_acc"] == "0.5"


def test_a_large_study_is_sampled_around_its_front_and_unfinished_trials():
    """Above the limit: the whole front (even past the limit), every unfinished trial, then an even sample by
    number with the first and last of the others; at or below it, no sample."""
    rng = np.random.default_rng(0)
    trials = []
    for number in range(1000):
        state = TrialState.RUNNING if number in (5, 998) else TrialState.COMPLETE
        values = (float(rng.random()), float(rng.integers(1, 9))) if state == TrialState.COMPLETE else None
        trials.append(IndexedTrial(trial_id=10 + number, number=number, state=state, values=values))
    directions = [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    assert choose_sample(trials, directions, 1000) is None
    sample = choose_sample(trials, directions, 100)
    complete = [t for t in trials if t.values is not None]
    signed = np.array([t.values for t in complete]) * [1.0, -1.0]
    dominated = [((signed <= v).all(1) & (signed < v).any(1)).any() for v in signed]
    front = {t.trial_id for t, d in zip(complete, dominated, strict=True) if not d}
    assert sample.front == len(front) and front <= sample.trial_ids
    assert {15, 1008} <= sample.trial_ids and len(sample.trial_ids) == 100
    assert {10, 1009} <= sample.trial_ids  # the first and the last trial of the rest
    assert (sample.total, sample.cutoff) == (1000, 1009)
    assert choose_sample(trials, directions, 3).trial_ids == front | {15, 1008}


@pytest.mark.parametrize(
    "server",
    ["sqlite", pytest.param(POSTGRES, marks=pytest.mark.db), pytest.param(MARIADB, marks=pytest.mark.db)],
    ids=["sqlite", "postgresql", "mariadb"],
)
def test_the_dashboard_command_shows_a_large_study_as_a_sample_and_every_new_trial(
    server, checkpoint, sqlite_url, tmp_path
):
    """A study over ``max_trials``: the answer holds its whole front and at most ``max_trials`` trials, the same
    ones as optuna's; new trials are added after them (a poll asks past the trials the page holds), and the
    sample stays the same when a write to a finished trial starts a new cache."""
    with contextlib.ExitStack() as stack:
        url = sqlite_url if server == "sqlite" else stack.enter_context(new_database(server))
        _check_sampled_dashboard(url, checkpoint, tmp_path)


def _check_sampled_dashboard(url, checkpoint, tmp_path):
    options = StartOptions(evaluations=0, checkpoint=checkpoint, population=20, calibration_batches=2)
    handle, _ = create_or_join(url, "sampled", options, device="cpu", progress=False)
    run_worker(handle, 200)
    trials_app = CachedTrialsApp(url, str(tmp_path / "artifacts"), max_trials=60)
    app = dashboard_app(trials_app)
    path = f"/api/studies/{handle.study_id}"
    study = optuna.load_study(study_name="sampled", storage=url)
    front = {t.number for t in pareto_front_trials(study.trials, study.directions)}
    sample = trials_app.sample(handle.study_id)
    assert sample.total == 200 and len(sample.trial_ids) == max(60, len(front))
    shown = json.loads(_get(app, path)[1])
    numbers = [t["number"] for t in shown["trials"]]
    assert numbers == sorted(numbers) and len(numbers) == len(sample.trial_ids) and front <= set(numbers)
    assert {t["number"] for t in shown["best_trials"]} == front
    stored = {t.number: t for t in study.trials}
    assert all(t["values"] == stored[t["number"]].values for t in shown["trials"])
    run_worker(handle, 240)
    time.sleep(2.1)  # past optuna-dashboard's own cache of a study's trials (2 s below 100 trials)
    newer = json.loads(_get(app, f"{path}?after={len(numbers)}")[1])["trials"]
    assert [t["number"] for t in newer] == list(range(200, 240))
    set_finished_user_attrs(handle.engine, stored[numbers[0]]._trial_id, {"finalized.test_acc": 0.5})
    again = json.loads(_get(app, path)[1])["trials"]
    assert [t["number"] for t in again] == numbers + list(range(200, 240))
    assert {a["key"] for a in again[0]["user_attrs"]} >= {"finalized.test_acc"}


def test_the_dashboard_command_says_when_it_shows_a_sample_and_serves_it(finalized_study):
    """``prune-search dashboard --max-trials N`` in its own process: it says how much of the study it shows, its
    study answer over HTTP holds that many trials, and Ctrl-C stops it with a word."""
    handle, url, artifacts, _, _ = finalized_study
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = handle.study.study_name
    args = ["dashboard", "--study", name, "--storage", url, "--port", str(port), "--max-trials", "50"]
    server = subprocess.Popen(
        [sys.executable, "-m", "prune_search", *args, "--artifact-dir", str(artifacts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [server.stdout.readline() for _ in range(3)]
        assert f"'{name}' has 200 trials: the dashboard shows 50 of them" in lines[1], lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{handle.study_id}", timeout=60) as answer:
            assert len(json.loads(answer.read())["trials"]) == 50
    finally:
        server.send_signal(signal.SIGINT)
        rest, _ = server.communicate(timeout=30)
    assert "stopped" in rest


def test_dashboard_shows_objectives_front_note_and_artifacts(finalized_study):
    handle, url, artifacts, number, _ = finalized_study
    app = optuna_dashboard.wsgi(url, artifact_store=FileSystemArtifactStore(str(artifacts)))
    status, body = _get(app, f"/api/studies/{handle.study_id}")
    assert status.startswith("200")
    study = json.loads(body)
    assert study["objective_names"] == ["bn_kl", "macs", "params"]
    assert sorted(t["number"] for t in study["best_trials"]) == sorted(r["trial"] for r in front_rows(handle))
    assert "prune-search study" in study["note"]["body"] and "fitness table" in study["note"]["body"]
    finalized = next(t for t in study["trials"] if t["number"] == number)
    assert [a["filename"] for a in finalized["artifacts"]] == [f"trial-{number}-plan.json"]
    attrs = {a["key"]: a["value"] for a in finalized["user_attrs"]}
    assert "finalized.test_acc" in attrs and "keep" in attrs
    assert max(len(a["value"]) for a in finalized["user_attrs"] if a["key"] != "finalized.out") < 120
    artifact_id = finalized["artifacts"][0]["artifact_id"]
    status, plan = _get(app, f"/artifacts/{handle.study_id}/{finalized['trial_id']}/{artifact_id}")
    assert status.startswith("200")
    assert json.loads(plan)["format"] == "prune-search/plan"


def test_report_is_one_offline_html_file_with_every_figure(finalized_study):
    handle, url, _, number, folder = finalized_study
    page = write_report(open_stored(url, handle.study.study_name), folder / "report.html").read_text()
    assert not list(folder.glob(".*.partial")), "written whole, with no partial file left"
    packed = re.findall(r'<script id="plotly-js" type="application/gzip-base64">([^<]*)</script>', page)
    assert len(packed) == 1, "plotly.js is embedded exactly once"
    assert gzip.decompress(base64.b64decode(packed[0])).decode() == get_plotlyjs()
    assert len(page) < 3_000_000, "compressed, plotly.js takes 2 MB of the page instead of 4.8"
    assert page.count("Plotly.newPlot(") == 7 == page.count(f'<script type="{FIGURE_SCRIPT}">')
    assert 'DecompressionStream("gzip")' in page
    assert not re.search(r"<script[^>]+src=", page), "the report must not load scripts from the network"
    for title in (
        "vs MACs (% of base)",
        "feasible Pareto front",
        "hypervolume after each generation",
        "keep ratio per group across the front",
        "taylor importance per group",
        f"knee (trial {choose(handle, use_knee=True)[0][0]})",
        "finalized (test accuracy)",
    ):
        assert title in page, title
    assert f"<td>{number}</td>" in page


def _report_data(finalized_study):
    handle, url = finalized_study[:2]
    return collect(open_stored(url, handle.study.study_name))


def test_the_report_reads_the_costs_and_proxies_the_trials_stored(finalized_study):
    """No torch: the cloud's costs and proxies and the front's rows are what recomputing them gives."""
    data = _report_data(finalized_study)
    costs, front = recomputed(data.stored, data.archive, data.sample)
    for stored, computed in zip((data.macs, data.params, data.proxy), costs, strict=True):
        np.testing.assert_allclose(stored, computed, rtol=1e-5)
    shown = [(r["trial"], r["keep"], r["macs"]) for r in data.front]
    assert shown == [(r["trial"], r["keep"], r["macs"]) for r in front]
    assert data.knee is not None and data.knee["trial"] in {r["trial"] for r in front}
    assert data.finalized and data.finalized[0]["trial"] == finalized_study[3]


def test_a_large_front_shows_a_bounded_heatmap_spread_over_macs(finalized_study):
    data = _report_data(finalized_study)
    copies = -(-300 // len(data.front))
    large = [row | {"trial": 10_000 * k + row["trial"]} for row in data.front for k in range(copies)]
    data.front = sorted(large, key=lambda r: (r["macs"], r["trial"]))
    fig = figures.keep_heatmap(data)
    labels = fig.data[0].y
    assert len(labels) == len(fig.data[0].z) == figures.HEATMAP_ROWS
    assert f"{figures.HEATMAP_ROWS} of {len(large)} trials" in fig.layout.title.text
    assert fig.layout.height <= 900
    assert labels[0].startswith(f"trial {data.front[0]['trial']} ")
    assert labels[-1].startswith(f"trial {data.front[-1]['trial']} ")


def test_axis_titles_and_tick_labels_stay_readable(finalized_study):
    data = _report_data(finalized_study)
    layout = figures.pareto_3d(data).layout
    eye = layout.scene.camera.eye
    assert math.dist((eye.x, eye.y, eye.z), (0, 0, 0)) > math.dist((1.25,) * 3, (0, 0, 0)), "the camera stands back"
    assert max(layout.margin.l, layout.margin.r, layout.margin.b) <= 20
    importance = figures.importance_distributions(data)
    axis = importance.layout.yaxis
    assert axis.type == "log" and axis.dtick == 1 and axis.exponentformat == "power", "10^k at every decade"
    low, high = axis.range
    scores = [value for trace in importance.data for value in trace.y if value > 0]
    assert low == math.floor(low) <= math.log10(min(scores)) and math.log10(max(scores)) <= high == math.ceil(high)


def test_report_and_dashboard_commands_exist(finalized_study):
    handle, url, _, _, folder = finalized_study
    result = run_cli("report", "--study", handle.study.study_name, "--storage", url, "--out", str(folder / "r.html"))
    assert result.returncode == 0, result.stderr
    assert (folder / "r.html").stat().st_size > 100_000
    assert "--artifact-dir" in run_cli("dashboard", "--help").stdout


@pytest.mark.parametrize("command", ["studies", "trials", "best-trials"])
def test_the_optuna_cli_reads_our_studies(finalized_study, command):
    handle, url, _, _, _ = finalized_study
    optuna_cli = os.path.join(os.path.dirname(sys.executable), "optuna")
    args = [optuna_cli, command, "--storage", url, "-f", "json"]
    if command != "studies":
        args += ["--study-name", handle.study.study_name]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    if command == "studies":
        assert handle.study.study_name in {row["name"] for row in rows}
    elif command == "trials":
        assert len(rows) == 200
        assert {"keep", "macs", "params"} <= set(rows[0]["user_attrs"])
    else:
        assert sorted(row["number"] for row in rows) == sorted(r["trial"] for r in front_rows(handle))


@pytest.mark.parametrize(
    "server",
    ["sqlite", pytest.param(POSTGRES, marks=pytest.mark.db), pytest.param(MARIADB, marks=pytest.mark.db)],
    ids=["sqlite", "postgresql", "mariadb"],
)
def test_each_write_to_a_finished_trial_gives_its_study_a_new_revision(server, sqlite_url, checkpoint):
    """What the dashboard's cache watches, on SQLite, PostgreSQL and MariaDB: a new token per write to a finished
    trial (its first write creates it), none for new trials."""
    with contextlib.ExitStack() as stack:
        url = sqlite_url if server == "sqlite" else stack.enter_context(new_database(server))
        options = StartOptions(evaluations=0, checkpoint=checkpoint, population=20, calibration_batches=2)
        handle, _ = create_or_join(url, "revised", options, device="cpu", progress=False)
        run_worker(handle, 20)
        assert handle.study_id not in revisions(handle.engine)
        trial_id = optuna.load_study(study_name="revised", storage=url).trials[3]._trial_id
        seen = []
        for value in (0.5, 0.6):
            set_finished_user_attrs(handle.engine, trial_id, {"finalized.test_acc": value})
            seen.append(revisions(handle.engine)[handle.study_id])
        run_worker(handle, 40)
        assert len(set(seen)) == 2 and revisions(handle.engine)[handle.study_id] == seen[-1]
        handle.engine.dispose()
