"""Validation of the records the toolkit reads back from disk: a manifest is checked field by
field before any file it names is opened. Everything here is stdlib only (the device path
imports it). A malformed record is a one-line ``BadInput``, never a KeyError or TypeError."""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath

from .errors import BadInput

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "xception-edge/manifest"
MANIFEST_VERSION = 1
PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DTYPES = ("float32", "int8", "uint8")
_PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
# Files a model file needs beside it, by suffix (OpenVINO's .xml reads the .bin of the same stem).
_COMPANIONS = {".xml": (".bin",)}
# Sections that are records of what happened: each a table when present.
_TABLES = ("host", "conversion", "calibration", "source_model", "profile", "verification", "accuracy_budget", "tools")


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


def _fail(where: Path, key: str, want: str, got) -> BadInput:
    shown = repr(got)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return BadInput(f"{where}: '{key}' must be {want}, got {shown}; convert the model again")


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


def _tensor(spec, where: Path, key: str) -> None:
    if not isinstance(spec, dict):
        raise _fail(where, key, "a table", spec)
    if not isinstance(spec.get("name"), str):
        raise _fail(where, f"{key}.name", "a string", spec.get("name"))
    if spec.get("dtype") not in _DTYPES:
        raise _fail(where, f"{key}.dtype", f"one of {', '.join(_DTYPES)}", spec.get("dtype"))
    shape = spec.get("shape")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(is_whole(d) and d >= -1 for d in shape):
        raise _fail(where, f"{key}.shape", "a list of dimensions", shape)
    scale, zp = spec.get("scale", 0.0), spec.get("zero_point", 0)
    if not is_finite_number(scale) or scale < 0 or (spec["dtype"] != "float32" and scale <= 0):
        raise _fail(where, f"{key}.scale", "a positive finite number for a quantized tensor", scale)
    if not is_whole(zp) or not -(2**31) <= zp < 2**31:
        raise _fail(where, f"{key}.zero_point", "an integer", zp)


def _files(files, where: Path, folder: Path) -> dict:
    if not isinstance(files, dict) or not files:
        raise _fail(where, "files", "a table of every file with its sha256", files)
    for rel, entry in files.items():
        relative_file(rel, folder, f"{where}: file")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"]):
            raise _fail(where, f"files.{rel}", "a table with a 64-hex-digit sha256", entry)
        if not is_whole(entry.get("bytes")) or entry["bytes"] < 0:
            raise _fail(where, f"files.{rel}.bytes", "a non-negative integer", entry.get("bytes"))
    return files


def validate_manifest(m, where: Path, folder: Path) -> dict:
    """Check every field the toolkit reads from an artifact's manifest; return it unchanged."""
    if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
        raise BadInput(f"{where} is not an xception-edge manifest")
    if m.get("schema_version") != MANIFEST_VERSION:
        raise BadInput(
            f"{where} has manifest schema version {m.get('schema_version')!r}, this xception-edge reads "
            f"{MANIFEST_VERSION}; convert the model again with this version"
        )
    plain_name(m.get("target"), f"{where}: target")
    for key in ("backend", "format", "model_file"):
        if not isinstance(m.get(key), str) or not m[key]:
            raise _fail(where, key, "a non-empty string", m.get(key))
    if m.get("precision") not in _PRECISIONS:
        raise _fail(where, "precision", f"one of {', '.join(_PRECISIONS)}", m.get("precision"))
    files = _files(m.get("files"), where, folder)
    model_file = m["model_file"]
    relative_file(model_file, folder, f"{where}: model_file")
    needed = [model_file] + [model_file[: -len(s)] + c for s, cs in _COMPANIONS.items() if model_file.endswith(s) for c in cs]
    for rel in needed:
        if rel not in files:
            raise BadInput(
                f"{where}: {rel} is used by the artifact but not listed under 'files' with its sha256; convert the model again"
            )
    io = m.get("io")
    if not isinstance(io, dict):
        raise _fail(where, "io", "a table with input and output", io)
    _tensor(io.get("input"), where, "io.input")
    _tensor(io.get("output"), where, "io.output")
    labels = m.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise _fail(where, "labels", "a non-empty list of class names", labels)
    if "threads" in m and not (is_whole(m["threads"]) and 1 <= m["threads"] <= 1024):
        raise _fail(where, "threads", "an integer from 1 to 1024", m["threads"])
    _preprocessing(m.get("preprocessing"), where)
    for key in _TABLES:
        if m.get(key) is not None and not isinstance(m[key], dict):
            raise _fail(where, key, "a table", m[key])
    return m


def _preprocessing(p, where: Path) -> None:
    from .preprocess import PreprocessSpec

    if not isinstance(p, dict):
        raise _fail(where, "preprocessing", "a table", p)
    for key in ("height", "width"):
        if not is_whole(p.get(key)) or not 1 <= p[key] <= 16384:
            raise _fail(where, f"preprocessing.{key}", "an integer from 1 to 16384", p.get(key))
    if "crop_fraction" in p and not is_finite_number(p["crop_fraction"]):
        raise _fail(where, "preprocessing.crop_fraction", "a number", p["crop_fraction"])
    for key in ("resize", "interpolation", "scaling", "layout", "channels"):
        if key in p and not isinstance(p[key], str):
            raise _fail(where, f"preprocessing.{key}", "a string", p[key])
    try:
        PreprocessSpec.from_dict(p)
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None
