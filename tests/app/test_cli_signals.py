"""SIGTERM ends a ``facialattr`` command: cleanly the first time, for certain the second."""

from __future__ import annotations

import signal

import pytest

from facialattr.app import cli


def test_sigterm_interrupts_and_leaves_the_default_action_for_a_second_one():
    previous = signal.signal(signal.SIGTERM, cli._raise_keyboard_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            cli._raise_keyboard_interrupt(signal.SIGTERM, None)
        # A first interrupt swallowed by a finalizer (seen in a training run) must not make the process unkillable.
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
