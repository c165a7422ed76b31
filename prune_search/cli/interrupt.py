"""Ctrl-C during a search, taken between generations so that nothing swallows it."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Deferred:
    """Whether Ctrl-C (SIGINT) was pressed since :func:`deferred_interrupt` began."""

    def __init__(self) -> None:
        self.pressed = False

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed: call it where stopping leaves nothing half-done."""
        if self.pressed:
            raise KeyboardInterrupt


@contextmanager
def deferred_interrupt() -> Iterator[Deferred]:
    """Within the block, the first Ctrl-C only sets ``pressed`` (the caller stops at its next
    :meth:`Deferred.check`); a second one interrupts at once, as usual.

    Python runs a SIGINT handler at the next bytecode in the main thread, which may be a weakref
    callback or a ``__del__`` run by the garbage collector; a ``KeyboardInterrupt`` raised there is
    printed as "Exception ignored" and lost, so a search interrupted that way kept running. Outside the
    main thread (where handlers cannot be set) the block changes nothing.
    """
    state = Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def first(signum: int, frame: FrameType | None) -> None:
        state.pressed = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
