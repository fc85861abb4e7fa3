"""REPORT/results/: one JSON per finished `evaluate` row, for `--resume`.

A cached result is read back from disk, so it is untrusted: one that is not the shape `evaluate`
writes (a list, a missing row, a row without latency, predictions that are not a mapping, …) is
warned about and computed again, never a traceback. Stdlib only."""

from __future__ import annotations

import json
from pathlib import Path

from . import console
from .artifact import atomic_write_text
from .records import is_finite_number

# What the report writers (report.py, report_html.py) and the scoring of new artifacts read from
# a cached row; "?" marks a field that may be null, "~" one that may also be absent (Keras's row has no float layers).
_ROW = {
    "name": "str",
    "backend": "str",
    "precision": "str",
    "images": "int",
    "top1": "num",
    "top5": "num",
    "drop_pp": "num",
    "top5_drop_pp": "num",
    "ratio": "num?",
    "meets_mlperf_99": "bool?",
    "agreement": "num",
    "flipped": "int",
    "size_bytes": "int?",
    "per_class": "dict",
    "flips_per_class": "dict",
    "latency": "dict",
    "cpu_warning": "str?",
    "float_layers": "list~",
    "float_mac_share": "num~",
    "max_drop_pp": "num~",
}
_ARTIFACT_ROW = {"path": "str", "target": "str"}
_LATENCY = {"p50_ms": "num", "p90_ms": "num", "samples_ms": "list"}
_CLASS = {"images": "int", "top1": "num", "drop_pp": "num"}
_FLIP = {"image": "str", "keras": "str", "artifact": "str"}
_KERAS = {"predictions": "dict", "model_sha256": "str", "model": "dict", "data": "dict"}
_DATA = {"images": "int", "decoded": "int", "undecodable": "list", "per_class_images": "dict"}
_UNDECODABLE = {"image": "str", "label": "str", "error": "str"}


def _is(value, kind: str) -> bool:
    if kind == "num":
        return is_finite_number(value)
    types = {"str": str, "int": int, "bool": bool, "dict": dict, "list": list}[kind]
    return isinstance(value, types) and not (kind == "int" and isinstance(value, bool))


_WORDS = {
    "str": "a string",
    "num": "a finite number",
    "int": "a whole number",
    "bool": "true or false",
    "dict": "an object",
    "list": "a list",
}


def _fields(obj, spec: dict[str, str], where: str) -> str | None:
    if not isinstance(obj, dict):
        return f"{where} must be an object"
    for key, kind in spec.items():
        base, value = kind.rstrip("?~"), obj.get(key)
        if kind.endswith("?") and key not in obj:
            return f"{where}.{key} is missing"
        if not (kind[-1] in "?~" and value is None) and not _is(value, base):
            return f"{where}.{key} must be {_WORDS[base]}" + (" or null" if kind[-1] in "?~" else "")
    return None


def _each(items, spec: dict[str, str], where: str) -> str | None:
    return next((p for i, item in enumerate(items) if (p := _fields(item, spec, f"{where}[{i}]"))), None)


def row_problem(row, name: str, labels: list[str] | None, *, keras: bool) -> str | None:
    """Why a cached row cannot be used (None: it can)."""
    problem = _fields(row, _ROW if keras else {**_ROW, **_ARTIFACT_ROW}, "row")
    if problem:
        return problem
    if row["name"] != name:
        return f"its row is for {row['name']!r}"
    if labels is not None and not set(row["per_class"]) <= set(labels):
        return "its classes are not among the artifacts' labels"
    if not all(isinstance(x, str) for x in row.get("float_layers") or []):
        return "row.float_layers must be a list of strings"
    problem = _fields(row["latency"], _LATENCY, "row.latency")
    if not problem and not all(_is(x, "num") for x in row["latency"]["samples_ms"]):
        problem = "row.latency.samples_ms must be a list of finite numbers"
    for c, v in row["per_class"].items():
        problem = problem or _fields(v, _CLASS, f"row.per_class[{c!r}]")
    for c, flips in row["flips_per_class"].items():
        if not isinstance(flips, list):
            return problem or f"row.flips_per_class[{c!r}] must be a list"
        problem = problem or _each(flips, _FLIP, f"row.flips[{c!r}]")
    return problem


def result_problem(data, name: str, labels: list[str] | None, *, keras: bool) -> str | None:
    """Why a cached result file's content cannot be used (None: it can)."""
    if not isinstance(data, dict):
        return "it must be a JSON object"
    problem = row_problem(data.get("row"), name, labels, keras=keras)
    if problem or not keras:
        return problem
    problem = _fields(data, _KERAS, "result") or _fields(data["data"], _DATA, "data")
    problem = problem or _each(data["data"]["undecodable"], _UNDECODABLE, "data.undecodable")
    if not problem and not set(data["model"]) <= {"kind", "input", "num_classes"}:
        problem = "model holds other fields than kind, input and num_classes"
    if problem:
        return problem
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data["predictions"].items()):
        return "predictions must map images to classes"
    if set(data["row"]["per_class"]) != set(data["data"]["per_class_images"]):
        return "row.per_class and data.per_class_images name different classes"
    return None


class ResultStore:
    """REPORT/results/<name>-<key>.json, each written atomically once its row is finished."""

    def __init__(self, folder: Path, *, resume: bool, labels: list[str] | None = None):
        self.folder = folder
        self.resume = resume
        self.labels = labels  # the artifacts' classes: a cached row's classes must be among them
        self.used: set[Path] = set()

    def _path(self, name: str, key: str) -> Path:
        return self.folder / f"{name}-{key[:16]}.json"

    def load(self, name: str, key: str, *, keras: bool = False) -> dict | None:
        """The cached result, or None (not resuming, none stored, another key, or unusable)."""
        path = self._path(name, key)
        if not self.resume or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            console.warn(f"{path} is unreadable ({type(exc).__name__}); computing {name} again")
            return None
        if isinstance(data, dict) and isinstance(data.get("key"), str) and data["key"] != key:
            return None  # a result of other settings
        if isinstance(data, dict) and data.get("key") != key:
            problem = "it has no key"
        else:
            problem = result_problem(data, name, self.labels, keras=keras)
        if problem:
            console.warn(f"{path} is not a usable result ({problem}); computing {name} again")
            return None
        self.used.add(path)
        return data

    def save(self, name: str, key: str, data: dict) -> None:
        path = self._path(name, key)
        atomic_write_text(path, json.dumps({"key": key, **data}, indent=1) + "\n")
        self.used.add(path)

    def prune(self) -> None:
        """Drop results of earlier runs that this report does not use."""
        for p in self.folder.glob("*.json"):
            if p not in self.used:
                p.unlink(missing_ok=True)
