"""Checks and (de)serialisation shared by the typed records. Stdlib only: the device path imports
the records through ``artifact``. A malformed record is a one-line ``BadInput`` naming the file
and the field, never a KeyError or TypeError."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from ..errors import BadInput

PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
AGAIN = "convert the model again"


class RecordError(BadInput):
    """A malformed record: ``problem`` is the field and what it must be, without the file (for a
    caller that words its own message, like ``evaluate --resume``'s warning)."""

    def __init__(self, message: str, problem: str):
        super().__init__(message)
        self.problem = problem


def shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(where, key: str, want: str, got, fix: str = AGAIN) -> RecordError:
    """``WHERE: 'KEY' must be WANT, got GOT; FIX``: the manifest's message style."""
    return RecordError(f"{where}: '{key}' must be {want}, got {shown(got)}; {fix}", f"{key} must be {want}")


def plain_name(value, what: str) -> str:
    """A name that is safe as one path component: letters, digits, '.', '_', '-'; not '.' or '..'."""
    if not isinstance(value, str) or not PLAIN_NAME.match(value) or value in (".", ".."):
        raise BadInput(
            f"{what} {value!r} is not a plain name; use letters, digits, '.', '_' and '-' only "
            "(not '.' or '..', at most 100 characters)"
        )
    return value


def relative_file(rel, folder: Path, what: str) -> Path:
    """``folder / rel`` for a relative POSIX path that stays inside ``folder``; BadInput otherwise."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        raise BadInput(f"{what} {rel!r} is not a relative path inside {folder}")
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise BadInput(f"{what} {rel!r} points outside {folder}; an artifact may only use files inside its folder")
    path = folder / Path(*parts)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise BadInput(f"{what} {rel!r} resolves outside {folder} (a link?); an artifact may only use files inside its folder")
    return path


def is_whole(v) -> bool:
    """An integer that is not a bool (JSON's true is an int to Python)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_finite_number(v) -> bool:
    """A finite int or float that is not a bool; an integer too large for a float is not."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def is_text_list(v) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


# ------------------------------------------------------------------ to_dict / from_dict plumbing
def split(d: dict, known: Iterable[str]) -> tuple[dict, tuple[str, ...]]:
    """The keys of ``d`` no field reads (kept as they are, in order), and every key ``d`` has."""
    known = set(known)
    return {k: v for k, v in d.items() if k not in known}, tuple(d)


def emit(record, values: dict, *, always: Callable[[str], bool] = lambda key: True) -> dict:
    """A record's dict: ``values`` (its fields by JSON key, in schema order) and its extra keys.

    A record read from a dict (``record._keys``) gives back exactly the keys it was read with, in
    that order (a field set later, to a value other than its default, is added). A record made in
    code gives every key ``always(key)`` says, and any other whose value is not None."""
    defaults = {_json_key(f): _default(f) for f in dataclasses.fields(record)}
    read = record._keys
    if read:
        keep = {k: v for k, v in values.items() if k in read or v != defaults.get(k, None)}
    else:
        keep = {k: v for k, v in values.items() if v is not None or always(k)}
    out = {**keep, **record.extra}
    if read:
        rank = {k: i for i, k in enumerate(read)}
        out = dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    return out


def _json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def extra_field():
    """Keys the record does not read: kept and written back unchanged (a newer writer's fields)."""
    return dataclasses.field(default_factory=dict, repr=False)


def keys_field():
    """The keys a record was read with (empty when made in code): to_dict gives back the same keys."""
    return dataclasses.field(default=(), repr=False, compare=False)
