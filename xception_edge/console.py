"""Terminal output: rich progress on a terminal, plain lines otherwise; warnings to stderr."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

_state = {"quiet": False}


def configure(*, quiet: bool = False) -> None:
    _state["quiet"] = quiet


@contextlib.contextmanager
def quieted() -> Iterator[None]:
    """Info lines and progress bars off for a while (a sweep's cells); warnings and errors still show."""
    before = _state["quiet"]
    _state["quiet"] = True
    try:
        yield
    finally:
        _state["quiet"] = before


def _err_is_tty() -> bool:
    return sys.stderr.isatty()


def info(msg: str) -> None:
    """Human progress/status line (stderr, so stdout stays clean for --json)."""
    if not _state["quiet"]:
        print(msg, file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    text = " ".join(str(msg).split())
    if _err_is_tty():
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)
    else:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def error(msg: str) -> None:
    text = " ".join(str(msg).split())
    print(f"error: {text}", file=sys.stderr, flush=True)


class _Task:
    def __init__(self, advance):
        self._advance = advance

    def advance(self, n: int = 1) -> None:
        self._advance(n)

    def update(self, completed: int) -> None:
        self._advance(None, completed)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[_Task]:
    """A progress bar on a terminal; on a pipe, a start line and a done line (with 25% steps)."""
    if _state["quiet"]:
        yield _Task(lambda n=1, completed=None: None)
        return
    start = time.perf_counter()
    if _err_is_tty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        ) as bar:
            tid = bar.add_task(description, total=total)

            def adv(n=1, completed=None):
                if completed is not None:
                    bar.update(tid, completed=completed)
                else:
                    bar.advance(tid, n)

            yield _Task(adv)
        return
    print(f"{description} ...", file=sys.stderr, flush=True)
    done = {"n": 0, "mark": 0}

    def adv(n=1, completed=None):
        done["n"] = completed if completed is not None else done["n"] + n
        if total:
            mark = int(4 * done["n"] / total)
            if 0 < mark < 4 and mark > done["mark"]:
                done["mark"] = mark
                print(f"{description}: {done['n']}/{total}", file=sys.stderr, flush=True)

    yield _Task(adv)
    print(f"{description}: done in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)


def capture_native_stderr() -> None:
    """Send file descriptor 2 (where TensorFlow's, LiteRT's and OpenVINO's C++ logs go) to a
    temporary log file, while Python's sys.stderr (our messages, progress bars, tracebacks)
    keeps writing to the terminal. `--verbose` skips this."""
    import atexit
    import io
    import os
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
        fd, log_path = tempfile.mkstemp(prefix="xception-edge-native-", suffix=".log")
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        return
    sys.stderr = io.TextIOWrapper(os.fdopen(saved, "wb", buffering=0), encoding="utf-8", errors="replace", write_through=True)

    def _cleanup():
        try:
            os.unlink(log_path)
        except OSError:
            pass

    atexit.register(_cleanup)
