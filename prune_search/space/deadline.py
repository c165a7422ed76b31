"""A time limit on tracing: torch-pruning can run for many minutes on models it cannot follow (Swin, MaxViT)."""

import math
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from prune_search.errors import PruneSearchError

TRACE_TIMEOUT_ENV = "PRUNE_SEARCH_TRACE_TIMEOUT_S"
DEFAULT_TRACE_TIMEOUT_S = 120.0
WORKER_NAME = "prune-search-trace"  # the thread that runs the work of run_within

T = TypeVar("T")


def trace_timeout_s() -> float:
    """Seconds a space may take to build: ``$PRUNE_SEARCH_TRACE_TIMEOUT_S``, else 120; a one-line error for a
    value that is not a positive number."""
    text = os.environ.get(TRACE_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TRACE_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise PruneSearchError(f"${TRACE_TIMEOUT_ENV} must be a positive number of seconds, e.g. 300; got '{text}'")
    return seconds


def run_within(seconds: float, work: Callable[[], T], late: Callable[[], PruneSearchError]) -> T:
    """``work()``'s result, or its exception, if it ends within ``seconds``; else raise ``late()``.

    ``work`` runs in a daemon thread, so this works from any thread, and a ``work`` that never ends does not
    keep the process from exiting; it is left running (a thread cannot be stopped) and its result dropped.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=WORKER_NAME, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise late()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
