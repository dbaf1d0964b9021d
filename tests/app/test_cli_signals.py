"""Signals end a ``facialattr`` command: cleanly the first time, for certain the second.

Real signals sent to this process (or to a child) through :mod:`facialattr.app.signals`,
the one place that handles them; the commands' own runs are in test_score.py and test_watch.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from facialattr.app.signals import sigterm_as_interrupt, stop_on_signals

# A process whose first SIGTERM is swallowed (as when the KeyboardInterrupt lands in a finalizer,
# seen in a training run) and which then keeps running: the second SIGTERM must still end it.
_SWALLOWS_THE_FIRST = """
import signal, time
from facialattr.app.signals import sigterm_as_interrupt
sigterm_as_interrupt()
try:
    signal.raise_signal(signal.SIGTERM)
except KeyboardInterrupt:
    print("first swallowed", flush=True)
signal.raise_signal(signal.SIGTERM)
time.sleep(30)
print("still running", flush=True)
"""


@pytest.fixture
def own_handlers():
    """This process's SIGINT and SIGTERM handlers, put back after the test."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_after_sigterm_as_interrupt_a_sigterm_raises_keyboard_interrupt_and_the_default_action_is_back(own_handlers):
    sigterm_as_interrupt()
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)  # delivered, and its handler run, before this returns
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_second_sigterm_ends_a_process_that_swallowed_the_first():
    run = subprocess.run([sys.executable, "-c", _SWALLOWS_THE_FIRST], capture_output=True, text=True, timeout=60)
    assert run.stdout == "first swallowed\n", run.stderr
    assert run.returncode == -signal.SIGTERM


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_inside_stop_on_signals_the_first_signal_sets_the_event_and_the_second_interrupts(own_handlers, signum):
    stop = threading.Event()
    before = signal.getsignal(signum)
    with stop_on_signals(stop):
        signal.raise_signal(signum)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signum)
    assert signal.getsignal(signum) == before


def test_off_the_main_thread_stop_on_signals_installs_nothing():
    stop, seen = threading.Event(), []

    def inside_a_thread():
        with stop_on_signals(stop):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=inside_a_thread)
    thread.start()
    thread.join()
    assert seen == [before] and not stop.is_set()
