"""Ctrl-C during a search: a flag the solver polls, set by a SIGINT handler while
planning, so the best solution so far survives."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_INTERRUPT = threading.Event()


def interrupted() -> bool:
    """Ctrl-C arrived during :func:`stop_on_sigint`."""
    return _INTERRUPT.is_set()


@contextmanager
def stop_on_sigint():
    """While planning, Ctrl-C stops the search instead of raising: the running CP-SAT
    search ends with its best solution and no further solve starts."""
    _INTERRUPT.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: _INTERRUPT.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
