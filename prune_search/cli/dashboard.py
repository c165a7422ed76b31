"""``prune-search dashboard``: optuna-dashboard on the study's storage and artifact store, its answers lean.

optuna-dashboard sends a study's every trial, each parameter with its distribution (≈ 7 KB per trial of a
12-group model), and its whole Pareto front again on every poll, uncompressed. This command serves the same
application with its JSON answers gzip-compressed for browsers that accept it (≈ 0.2 KB per trial on the wire)
and tagged, so that an unchanged answer, an idle poll, is a ``304`` without a body.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

import gzip
import hashlib
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard
import typer
from optuna.artifacts import FileSystemArtifactStore

from prune_search.cli.options import ARTIFACT_DIR, ArtifactDirOpt, ExistingStudyOpt, StorageOpt, quiet_optuna
from prune_search.errors import PruneSearchError
from prune_search.search import open_study
from prune_search.storage import resolve_url

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
JSON_TYPES = ("application/json",)
"""Content types this command compresses and tags (optuna-dashboard serves its static bundle pre-compressed)."""
MIN_GZIP_BYTES = 1024


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
) -> None:
    quiet_optuna()
    url = resolve_url(storage)
    handle = open_study(url, study)
    app = lean_answers(optuna_dashboard.wsgi(url, artifact_store=FileSystemArtifactStore(str(artifact_dir))))
    try:
        server = make_server(host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise PruneSearchError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
        ) from None
    typer.echo(f"optuna-dashboard for '{study}' at http://{host}:{port}/dashboard/studies/{handle.study_id}")
    typer.echo("Ctrl-C stops it.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()
