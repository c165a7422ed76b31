"""Ctrl-C during a search is taken between generations: the first press is remembered, a second one stops at once."""

import os
import signal

import pytest

from prune_search.cli.interrupt import deferred_interrupt


def test_a_first_ctrl_c_is_remembered_until_checked_and_a_second_interrupts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt() as interrupt:
        interrupt.check()  # nothing pressed yet
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.pressed
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):  # the second press: Python's own handler again
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_ctrl_c_inside_a_garbage_collector_callback_is_not_lost():
    import weakref

    class Owner:
        pass

    with deferred_interrupt() as interrupt:
        owner = Owner()
        weakref.finalize(owner, os.kill, os.getpid(), signal.SIGINT)  # the signal arrives during a finalizer
        del owner
        assert interrupt.pressed
