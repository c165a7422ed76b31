"""Running the CLI as a user does, and checking its error lines.

:func:`run_cli` runs ``prune-search`` in the test's own process: the same entry point
(:func:`prune_search.cli.main`) with its own argv, working folder, environment, stdout and stderr, and
torch's thread count restored afterwards, which saves the 2–4 s of a fresh interpreter's imports per call.
Tests of what only a fresh process shows (imports, signals, concurrency) start one themselves.
"""

import contextlib
import io
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import torch

from prune_search.cli import main


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``prune-search ARGS`` in this process (``env`` adds variables, ``cwd`` is the working folder)."""
    out, err = io.StringIO(), io.StringIO()
    with _isolated(args, cwd, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _exit_code(main)
    return subprocess.CompletedProcess(["prune-search", *args], code, out.getvalue(), err.getvalue())


def _exit_code(entry) -> int:
    """The exit status the process would end with, a traceback on stderr as Python prints it."""
    try:
        entry()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:  # a crash, reported as the interpreter would
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def _isolated(args: tuple[str, ...], cwd: Path | None, env: dict[str, str] | None) -> Iterator[None]:
    saved_argv, saved_env, saved_cwd, threads = sys.argv, dict(os.environ), os.getcwd(), torch.get_num_threads()
    sys.argv = ["prune-search", *args]
    os.environ.update(env or {})
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        torch.set_num_threads(threads)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2, a single ``error:`` line on stderr naming every needle, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
