"""One error hierarchy. Every error is a one-line message that names the file or value
and says what to do; the CLI prints it and exits with the error's exit code."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its class name when it has none),
    at most ``limit`` characters: what a one-line error quotes from a framework's exception."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return exc.__class__.__name__


class XceptionEdgeError(Exception):
    """Base class: a user-facing, one-line error."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class BadInput(XceptionEdgeError):
    """A file, option or value the user gave is wrong (exit 2)."""


class BackendUnavailable(BadInput):
    """A backend package is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, where: str = ""):
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{package} is not installed; install it with: pip install 'xception-edge[{extra}]'")
        self.package = package
        self.extra = extra


class VerificationFailed(XceptionEdgeError):
    """A converted artifact disagrees with the source model beyond the floor (exit 1)."""

    exit_code = 1


class ConversionFailed(XceptionEdgeError):
    """A converter failed or produced something it must not (e.g. float ops in int8) (exit 1)."""

    exit_code = 1
