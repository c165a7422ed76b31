"""``prune-search dashboard``: optuna-dashboard on the study's storage and artifact store, its answers lean.

optuna-dashboard sends a study's every trial, each parameter with its distribution (≈ 7 KB per trial of a
12-group model), and its whole Pareto front again on every poll, uncompressed. This command serves the same
application with its JSON answers gzip-compressed for browsers that accept it (≈ 0.2 KB per trial on the wire)
and tagged, so that an unchanged answer, an idle poll, is a ``304`` without a body. optuna-dashboard also ranks
a study's Pareto front in pure Python, comparing every trial with every other on every answer (790 s of a
20,000-trial study's 876 s answer here; none within 600 s at 100,000 trials); this command ranks it with numpy,
and lets it read only new trials when the page polls (:class:`CachedTrialsApp`). A study of more than
``--max-trials`` trials is shown as its Pareto front, an even sample by trial number and every trial added since
(:mod:`prune_search.storage.sampled_trials`): the page ranks the trials it holds again in the browser, every one
against every other, and at 100,000 trials the whole answer would be ≈ 750 MB.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

import gzip
import hashlib
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import optuna
import optuna_dashboard
import typer
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import _app as dashboard_app_module

from prune_search.cli.output import quiet_optuna
from prune_search.cli.storage_options import ARTIFACT_DIR, ArtifactDirOpt, ExistingStudyOpt, StorageOpt
from prune_search.errors import PruneSearchError
from prune_search.search.front import front_indices
from prune_search.search.stored import open_stored
from prune_search.storage import create_engine, resolve_url
from prune_search.storage.sampled_trials import SampledStorage, TrialSample
from prune_search.storage.study_data import revisions

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
JSON_TYPES = ("application/json",)
"""Content types this command compresses and tags (optuna-dashboard serves its static bundle pre-compressed)."""
MIN_GZIP_BYTES = 1024
MAX_TRIALS = 5_000
"""``--max-trials``'s default: a larger study is shown as a sample of about this many trials (its Pareto front whole).
optuna-dashboard's page ranks the trials it holds every trial against every other, in the browser."""


def lean_answers(app: WSGIApp) -> WSGIApp:
    """``app`` with its successful JSON answers tagged and compressed.

    Each gets an ``ETag`` (a hash of its content) and ``Cache-Control: no-cache``, so a browser asks again with
    ``If-None-Match`` and an unchanged answer (an idle poll: no new trial, the same front) comes back as
    ``304 Not Modified`` with no body; a changed one is gzip-compressed when ``Accept-Encoding`` allows it.
    """

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer: dict[str, Any] = {}

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            answer.update(status=status, headers=headers, exc_info=exc_info)
            return lambda _data: None

        parts = app(environ, hold)
        try:
            body = b"".join(parts)
        finally:
            getattr(parts, "close", lambda: None)()
        status, headers = answer["status"], answer["headers"]
        kind = next((v for k, v in headers if k.lower() == "content-type"), "").split(";")[0].strip()
        encoded = any(k.lower() == "content-encoding" for k, _ in headers)
        if kind not in JSON_TYPES or encoded or not status.startswith("200"):
            start_response(status, headers, answer["exc_info"])
            return [body]
        tag = f'"{hashlib.sha1(body).hexdigest()}"'
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "etag", "cache-control")]
        headers += [("ETag", tag), ("Cache-Control", "no-cache"), ("Vary", "Accept-Encoding")]
        if tag in environ.get("HTTP_IF_NONE_MATCH", ""):
            start_response("304 Not Modified", headers)
            return [b""]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "") and len(body) >= MIN_GZIP_BYTES:
            body = gzip.compress(body, compresslevel=6)
            headers.append(("Content-Encoding", "gzip"))
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return serve


def pareto_front_trials(trials: list[FrozenTrial], directions: list[StudyDirection]) -> list[FrozenTrial]:
    """The COMPLETE trials that no other COMPLETE trial dominates, in the order given: what optuna-dashboard's
    ``get_pareto_front_trials`` returns (equal values do not dominate; constraints are not looked at), in
    O(N log N) numpy rather than its O(N²) Python loop."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    sign = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions])
    values = np.array([t.values for t in complete], dtype=np.float64) * sign  # [N, M], all minimised
    return [complete[i] for i in front_indices(values, np.zeros(len(complete)))]


class CachedTrialsApp:
    """optuna-dashboard's application over a cache of the stored trials that reads only new and unfinished
    trials when optuna-dashboard asks again (Optuna's cached storage, ``optuna.storages.get_storage``), instead of
    every trial through Optuna's ORM every 10 s.

    Optuna's cache keeps a finished trial as first read; prune-search writes to finished trials (``finalize``'s
    results and plan, measured scores) only through ``optuna_tables``, which gives the study a new revision
    (``study_data.REVISION_KEY``) each time. Before each request this application reads the revisions (one
    query) and, when one changed, starts over with a new cache, so that the change shows.

    ``max_trials`` > 0: a study with more trials than that is shown as its sample (:class:`SampledStorage`: its
    Pareto front, an even sample by trial number, every later trial), the same sample across caches."""

    def __init__(self, url: str, artifact_dir: str, max_trials: int = MAX_TRIALS) -> None:
        self._url, self._artifact_dir, self._max_trials = url, artifact_dir, max_trials
        self._samples: dict[int, TrialSample | None] = {}  # kept across caches: the page's trials stay the same
        self._engine = create_engine(url)
        self._lock = threading.Lock()
        self._revisions: dict[int, str] | None = None
        self._storage: RDBStorage | None = None
        self._app: WSGIApp | None = None
        self._cached: BaseStorage | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self._current()[0](environ, start_response)

    def _current(self) -> tuple[WSGIApp, BaseStorage]:
        """The application and its cached storage, both new when a study's revision changed since the last call."""
        with self._lock:
            now = revisions(self._engine)
            if self._app is None or self._cached is None or now != self._revisions:
                if self._storage is not None:  # requests still being answered keep their connections
                    self._storage.engine.dispose()
                self._storage = RDBStorage(self._url)
                self._cached = (
                    SampledStorage(self._storage, self._max_trials, self._samples)
                    if self._max_trials > 0
                    else optuna.storages.get_storage(self._storage)
                )
                artifacts = FileSystemArtifactStore(self._artifact_dir)
                self._app = optuna_dashboard.wsgi(self._cached, artifact_store=artifacts)
                self._revisions = now
            return self._app, self._cached

    def sample(self, study_id: int) -> TrialSample | None:
        """What the dashboard shows of the study: None for every trial, else its :class:`TrialSample` (chosen now,
        if no request has chosen it yet)."""
        cached = self._current()[1]
        return cached.sample(study_id) if isinstance(cached, SampledStorage) else None


def dashboard_app(trials: CachedTrialsApp) -> WSGIApp:
    """What ``prune-search dashboard`` serves: optuna-dashboard over cached (or sampled) trials, ``trials``, its
    Pareto fronts ranked by :func:`pareto_front_trials` and its answers lean (:func:`lean_answers`).

    The ranking replaces optuna-dashboard's module-level ``get_pareto_front_trials`` in this process (it has no
    hook for it), only where that name still exists."""
    if hasattr(dashboard_app_module, "get_pareto_front_trials"):
        dashboard_app_module.get_pareto_front_trials = pareto_front_trials
    return lean_answers(trials)


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """One line per request is noise in a terminal that also shows this command's own lines."""


def dashboard(
    study: ExistingStudyOpt,
    storage: StorageOpt = None,
    artifact_dir: ArtifactDirOpt = ARTIFACT_DIR,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    max_trials: Annotated[
        int,
        typer.Option(
            min=0,
            help="Show a study of more trials as its Pareto front, an even sample of this many by trial number and "
            "every trial added while this runs (0: every trial; slow and memory-hungry at 100,000).",
        ),
    ] = MAX_TRIALS,
) -> None:
    quiet_optuna()
    url = resolve_url(storage)
    stored = open_stored(url, study)
    trials = CachedTrialsApp(url, str(artifact_dir), max_trials)
    sample = trials.sample(stored.study_id)
    app = dashboard_app(trials)
    try:
        server = make_server(host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise PruneSearchError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
        ) from None
    typer.echo(f"optuna-dashboard for '{study}' at http://{host}:{port}/dashboard/studies/{stored.study_id}")
    if sample is not None:
        typer.echo(
            f"'{study}' has {sample.total:,} trials: the dashboard shows {len(sample.trial_ids):,} of them (its "
            f"Pareto front of {sample.front:,} and an even sample by trial number) and every new one; "
            "--max-trials 0 shows all"
        )
    typer.echo("Ctrl-C stops it.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()
