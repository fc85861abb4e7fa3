"""REPORT/results/: one JSON per finished `evaluate` row, for `--resume`.

A cached result is read back from disk, so it is untrusted: one that is not the shape `evaluate`
writes (a list, a missing row, a row without latency, predictions that are not a mapping, …) is
warned about and computed again, never a traceback. Stdlib only."""

from __future__ import annotations

import json
from pathlib import Path

from . import console
from .artifact import atomic_write_text
from .records import RecordError, ReportRow
from .records.report import each_problem, field_problem

# What a cached Keras result holds besides its row (the row: ReportRow.from_dict, strict).
_KERAS = {"predictions": "dict", "model_sha256": "str", "model": "dict", "data": "dict"}
_DATA = {"images": "int", "decoded": "int", "undecodable": "list", "per_class_images": "dict"}
_UNDECODABLE = {"image": "str", "label": "str", "error": "str"}


def _unusable(path: Path, problem: str) -> RecordError:
    return RecordError(f"{path} is not a usable result ({problem})", problem)


def read_row(row, path: Path, name: str, labels: list[str] | None, *, keras: bool) -> ReportRow:
    """A cached row, checked as strictly as the report writers read it (RecordError: why not)."""
    parsed = ReportRow.from_dict(row, path, "row", artifact=not keras)
    if parsed.name != name:
        raise _unusable(path, f"its row is for {parsed.name!r}")
    if labels is not None and not set(parsed.per_class) <= set(labels):
        raise _unusable(path, "its classes are not among the artifacts' labels")
    return parsed


def read_result(data, path: Path, name: str, labels: list[str] | None, *, keras: bool) -> dict:
    """A cached result file's content with its row a ReportRow (RecordError: why it cannot be used)."""
    if not isinstance(data, dict):
        raise _unusable(path, "it must be a JSON object")
    row = read_row(data.get("row"), path, name, labels, keras=keras)
    if not keras:
        if "device_row" not in data:
            return {**data, "row": row}
        device = read_row(data["device_row"], path, name, labels, keras=False)  # `evaluate --device`
        if not (isinstance(device.device, dict) and isinstance(device.parity, dict)):
            raise _unusable(path, "its device_row has no device or parity record")
        return {**data, "row": row, "device_row": device}
    problem = field_problem(data, _KERAS, "result") or field_problem(data["data"], _DATA, "data")
    problem = problem or each_problem(data["data"]["undecodable"], _UNDECODABLE, "data.undecodable")
    if not problem and not set(data["model"]) <= {"kind", "input", "num_classes"}:
        problem = "model holds other fields than kind, input and num_classes"
    if not problem and not all(isinstance(k, str) and isinstance(v, str) for k, v in data["predictions"].items()):
        problem = "predictions must map images to classes"
    if not problem and set(row.per_class) != set(data["data"]["per_class_images"]):
        problem = "row.per_class and data.per_class_images name different classes"
    if problem:
        raise _unusable(path, problem)
    return {**data, "row": row}


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
        """The cached result (its ``row`` a ReportRow), or None (not resuming, none stored, another
        key, or unusable)."""
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
        try:
            if isinstance(data, dict) and data.get("key") != key:
                raise _unusable(path, "it has no key")
            result = read_result(data, path, name, self.labels, keras=keras)
        except RecordError as exc:
            console.warn(f"{path} is not a usable result ({exc.problem}); computing {name} again")
            return None
        self.used.add(path)
        return result

    def save(self, name: str, key: str, data: dict) -> None:
        """``data``: ``{"row": ReportRow, ...}`` (for Keras also its predictions, model and data)."""
        path = self._path(name, key)
        data = {**data, "row": data["row"].to_dict()}
        if data.get("device_row") is not None:
            data["device_row"] = data["device_row"].to_dict()
        else:
            data.pop("device_row", None)
        atomic_write_text(path, json.dumps({"key": key, **data}, indent=1) + "\n")
        self.used.add(path)

    def prune(self) -> None:
        """Drop results of earlier runs that this report does not use."""
        for p in self.folder.glob("*.json"):
            if p not in self.used:
                p.unlink(missing_ok=True)
