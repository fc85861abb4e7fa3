"""Ctrl-C that always stops a run.

A KeyboardInterrupt raised while a framework's C++ code calls back into Python can be
swallowed there ("Exception ignored in ..."), and a process started from a background shell
inherits SIGINT ignored. The CLI installs this handler, which records the interrupt before it
raises; ``check()`` raises again at the points that commit results (renaming an artifact into
place, between targets), so a swallowed interrupt still ends the run with exit 130.
"""

from __future__ import annotations

import signal
import sys

_state = {"signal": 0}


def _handler(signum, frame) -> None:
    _state["signal"] = signum
    raise KeyboardInterrupt


def _unraisable(hook):
    def quiet(unraisable) -> None:
        """An interrupt that landed in a finalizer (``Exception ignored in ... __del__``): Python
        would print its traceback; the handler has recorded it, so say nothing."""
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            _state["signal"] = _state["signal"] or signal.SIGINT
            return
        hook(unraisable)

    return quiet


def install() -> None:
    """Handle SIGINT (and SIGTERM) in the main thread, whatever the parent set; an interrupt
    swallowed in a finalizer prints no traceback and still stops the run."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    sys.unraisablehook = _unraisable(sys.unraisablehook)


def interrupted() -> bool:
    return bool(_state["signal"])


def exit_code() -> int:
    """128 + the signal's number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + (_state["signal"] or signal.SIGINT)


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived, even one a framework swallowed."""
    if _state["signal"]:
        raise KeyboardInterrupt
