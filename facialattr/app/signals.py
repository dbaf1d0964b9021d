"""The one place that handles signals: the ``facialattr`` command's, never a library's.

SIGTERM takes Ctrl-C's path (a KeyboardInterrupt), so servers and files close cleanly and a
scoring run keeps the rows it wrote. A long-running loop that can stop gently (``watch``) asks
for :func:`stop_on_signals`: the first Ctrl-C or SIGTERM sets its stop event, a second aborts.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)


def sigterm_as_interrupt() -> None:
    """From now on SIGTERM raises KeyboardInterrupt once; a second SIGTERM ends the process (its default)."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum, frame):
    # The exception can land in a finalizer (a weakref callback, __del__), where Python prints and
    # drops it and the run goes on; with the default action back, a second SIGTERM always ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Inside the block the first Ctrl-C or SIGTERM sets ``stop``; a second raises KeyboardInterrupt.

    Off the main thread (where Python cannot install handlers) the block runs without them.
    The handlers before the block are put back after it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("stopping (signal %d); Ctrl-C again to abort", signum)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
