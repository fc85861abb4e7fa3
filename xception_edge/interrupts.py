"""Ctrl-C that always stops a run.

A KeyboardInterrupt raised while a framework's C++ code calls back into Python can be
swallowed there ("Exception ignored in ..."), and a process started from a background shell
inherits SIGINT ignored. The CLI installs this handler, which records the interrupt before it
raises; ``check()`` raises again at the points that commit results (renaming an artifact into
place, between targets), so a swallowed interrupt still ends the run with exit 130.
"""

from __future__ import annotations

import signal

_state = {"signal": 0}


def _handler(signum, frame) -> None:
    _state["signal"] = signum
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT (and SIGTERM) in the main thread, whatever the parent set."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def interrupted() -> bool:
    return bool(_state["signal"])


def exit_code() -> int:
    """128 + the signal's number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + (_state["signal"] or signal.SIGINT)


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived, even one a framework swallowed."""
    if _state["signal"]:
        raise KeyboardInterrupt
