"""``ReportRow`` and ``Report``: evaluate's report.json (docs/report-schema.md), one row per
model. ``from_dict`` is where a row read back from disk is checked: strictly for a cached row of
``evaluate --resume`` (every field the report writers read), leniently for a report given to
``gate``, which reads only a few fields and fails a missing or non-finite measured value
itself (such a value is read as None)."""

from __future__ import annotations

import dataclasses
import json

from ..errors import BadInput
from .base import RecordError, emit, extra_field, is_finite_number, keys_field, shown, split

REPORT_SCHEMA = "xception-edge/report"
REPORT_VERSION = 1
AGAIN = "write it again with `xception-edge evaluate`"
# A field's kind; "?" may be null but not absent, "~" may be absent or null; strict checks only.
_ROW = {
    "name": "str", "path": "str~", "target": "str~", "backend": "str", "format": "str~", "precision": "str",
    "hardware": "str~", "manifest_sha256": "str~", "size_bytes": "int?", "threads": "int~", "float_layers": "list~",
    "float_mac_share": "num~", "max_drop_pp": "num~", "images": "int", "top1": "num", "top5": "num", "drop_pp": "num",
    "top5_drop_pp": "num", "ratio": "num?", "meets_mlperf_99": "bool?", "agreement": "num", "flipped": "int",
    "flips_per_class": "dict", "per_class": "dict", "latency": "dict", "cpu_warning": "str?", "seconds": "num~",
    "reused": "bool~", "same_source_model": "bool~", "device": "dict~", "device_host": "dict~", "parity": "dict~",
    "latency_emulated": "bool~", "drop_ci_pp": "list~", "mcnemar_p": "num~", "lost": "int~", "gained": "int~",
}  # fmt: skip
_SINCE_CI = ("drop_ci_pp", "mcnemar_p", "lost", "gained")  # absent from older rows, and from a row without them
_ARTIFACT_ROW = {"path": "str", "target": "str"}
_LATENCY = {"p50_ms": "num", "p90_ms": "num", "samples_ms": "list"}
_CLASS = {"images": "int", "top1": "num", "drop_pp": "num"}
_FLIP = {"image": "str", "keras": "str", "artifact": "str"}
_ARTIFACT_ONLY = ("manifest_sha256", "float_layers", "float_mac_share", "max_drop_pp", "seconds")
_WORDS = {"str": "a string", "num": "a finite number", "int": "a whole number", "bool": "true or false", "dict": "an object"}
_WORDS["list"] = "a list"


def is_kind(value, kind: str) -> bool:
    if kind == "num":
        return is_finite_number(value)
    types = {"str": str, "int": int, "bool": bool, "dict": dict, "list": list}[kind]
    return isinstance(value, types) and not (kind == "int" and isinstance(value, bool))


def field_problem(obj, spec: dict[str, str], where: str) -> str | None:
    """The first field of ``obj`` that is not of its kind in ``spec`` (None: all are)."""
    if not isinstance(obj, dict):
        return f"{where} must be an object"
    for key, kind in spec.items():
        base, value = kind.rstrip("?~"), obj.get(key)
        if kind.endswith("?") and key not in obj:
            return f"{where}.{key} is missing"
        if not (kind[-1] in "?~" and value is None) and not is_kind(value, base):
            return f"{where}.{key} must be {_WORDS[base]}" + (" or null" if kind[-1] in "?~" else "")
    return None


def is_interval(value) -> bool:
    """``[low, high]``: two finite numbers, low ≤ high."""
    return isinstance(value, list) and len(value) == 2 and all(is_kind(x, "num") for x in value) and value[0] <= value[1]


def each_problem(items, spec: dict[str, str], where: str) -> str | None:
    return next((p for i, item in enumerate(items) if (p := field_problem(item, spec, f"{where}[{i}]"))), None)


def _strict_problem(row, where: str, artifact: bool) -> str | None:
    problem = field_problem(row, {**_ROW, **_ARTIFACT_ROW} if artifact else _ROW, where)
    if problem:
        return problem
    if not all(isinstance(x, str) for x in row.get("float_layers") or []):
        return f"{where}.float_layers must be a list of strings"
    if row.get("drop_ci_pp") is not None and not is_interval(row["drop_ci_pp"]):
        return f"{where}.drop_ci_pp must be [low, high], two finite numbers with low ≤ high"
    problem = field_problem(row["latency"], _LATENCY, f"{where}.latency")
    if not problem and not all(is_kind(x, "num") for x in row["latency"]["samples_ms"]):
        problem = f"{where}.latency.samples_ms must be a list of finite numbers"
    for c, v in row["per_class"].items():
        problem = problem or field_problem(v, _CLASS, f"{where}.per_class[{c!r}]")
    for c, flips in row["flips_per_class"].items():
        if not isinstance(flips, list):
            return problem or f"{where}.flips_per_class[{c!r}] must be a list"
        problem = problem or each_problem(flips, _FLIP, f"{where}.flips[{c!r}]")
    return problem


def _lenient(row: dict, where: str, artifact: bool) -> dict:
    """What `gate` needs of an artifact's row: its target a string, name/path strings or absent,
    latency an object or null. Every other field (and every field of the reference row) is kept
    when it is of its kind, else read as None."""
    if artifact and not isinstance(row.get("target"), str):
        raise _Bad(f"{where}.target must be a string (the target profile's name)", row.get("target"))
    for key in ("name", "path"):
        if artifact and row.get(key) is not None and not isinstance(row[key], str):
            raise _Bad(f"{where}.{key} must be a string", row[key])
    if artifact and row.get("latency") is not None and not isinstance(row["latency"], dict):
        raise _Bad(f"{where}.latency must be an object or null", row["latency"])
    out = {}
    for key, kind in _ROW.items():
        if key in row:
            base = "num" if kind.startswith("int") else kind.rstrip("?~")  # a gate reads any finite count
            ok = is_kind(row[key], base) and (key != "float_layers" or all(isinstance(x, str) for x in row[key]))
            ok = ok and (key != "drop_ci_pp" or is_interval(row[key]))
            out[key] = row[key] if ok else None
    return out


class _Bad(Exception):
    def __init__(self, problem: str, got):
        super().__init__(problem)
        self.problem, self.got = problem, got


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One model of the report: the Keras reference or an artifact (docs/report-schema.md, Rows)."""

    name: str | None = None
    path: str | None = None
    target: str | None = None  # None for Keras
    backend: str | None = None
    format: str | None = None
    precision: str | None = None
    hardware: str | None = None
    manifest_sha256: str | None = None  # artifacts only
    size_bytes: int | None = None
    threads: int | None = None
    float_layers: tuple[str, ...] | None = None  # artifacts only
    float_mac_share: float | None = None
    max_drop_pp: float | None = None
    images: int | None = None
    top1: float | None = None
    top5: float | None = None
    drop_pp: float | None = None
    top5_drop_pp: float | None = None
    ratio: float | None = None
    meets_mlperf_99: bool | None = None
    agreement: float | None = None
    flipped: int | None = None
    flips_per_class: dict = dataclasses.field(default_factory=dict)  # class -> [{image, keras, artifact}]
    per_class: dict = dataclasses.field(default_factory=dict)  # class -> {images, top1, top5, drop_pp}
    latency: dict | None = None  # LatencyStats.to_dict()
    cpu_warning: str | None = None
    seconds: float | None = None  # artifacts only
    reused: bool | None = None
    same_source_model: bool | None = None  # artifacts only
    # A row measured on a device (`evaluate --device`): the device, its host info, parity with this
    # host's outputs of the same artifact, and whether its latency is emulated (never gated).
    device: dict | None = None
    device_host: dict | None = None
    parity: dict | None = None
    latency_emulated: bool | None = None
    # How far drop_pp can be trusted (artifact and device rows): its paired-bootstrap interval
    # [low, high] in pp, McNemar's exact p, and the images lost / gained against Keras.
    drop_ci_pp: list | None = None
    mcnemar_p: float | None = None
    lost: int | None = None
    gained: int | None = None
    extra: dict = extra_field()
    _keys: tuple[str, ...] = keys_field()

    @property
    def p50_ms(self):
        return (self.latency or {}).get("p50_ms")

    @property
    def device_label(self) -> str | None:
        """The device a device row was measured on (its ``--device`` spec), else None."""
        spec = (self.device or {}).get("spec")
        return spec if isinstance(spec, str) else None

    def to_dict(self) -> dict:
        values = {k: getattr(self, k) for k in _ROW}
        if self.float_layers is not None:
            values["float_layers"] = list(self.float_layers)
        artifact = self.manifest_sha256 is not None

        def always(key: str) -> bool:  # a row made in code: Keras's has no artifact fields
            return key not in ("reused", "same_source_model", *_SINCE_CI) and (artifact or key not in _ARTIFACT_ONLY)

        return emit(self, values, always=always)

    @classmethod
    def from_dict(cls, d, path, at: str = "row", *, strict: bool = True, artifact: bool = True) -> ReportRow:
        """``at``: where the row is in its file (``row``, ``artifacts[2]``); ``path``: the file, as
        the message names it. ``artifact``: a row of an artifact (a path and a target)."""
        try:
            if strict:
                problem = _strict_problem(d, at, artifact)
                if problem:
                    raise _Bad(problem, d)
                values = {k: d[k] for k in _ROW if k in d}
            else:
                if not isinstance(d, dict):
                    raise _Bad(f"{at} must be an object" + (" (an artifact row)" if artifact else ""), d)
                values = _lenient(d, at, artifact)
        except _Bad as exc:
            raise RecordError(f"{path}: {exc.problem}, got {shown(exc.got, 40)}; {AGAIN}", exc.problem) from None
        if values.get("float_layers") is not None:
            values["float_layers"] = tuple(values["float_layers"])
        extra, keys = split(d, _ROW)
        return cls(**values, extra=extra, _keys=keys)


_HEADER = ("created", "xception_edge", "host", "settings", "model", "preprocessing", "labels", "data")


@dataclasses.dataclass(frozen=True)
class Report:
    """report.json: how and where it was measured, the Keras ``reference`` row and one row per artifact."""

    reference: ReportRow
    artifacts: tuple[ReportRow, ...]
    created: str | None = None
    xception_edge: str | None = None
    host: dict = dataclasses.field(default_factory=dict)  # hostinfo.host()
    settings: dict = dataclasses.field(default_factory=dict)  # runs, warmup, decode_threads, batch, mlperf_ratio
    model: dict = dataclasses.field(default_factory=dict)  # spec, sha256, kind, input, num_classes
    preprocessing: dict = dataclasses.field(default_factory=dict)
    labels: list = dataclasses.field(default_factory=list)
    data: dict = dataclasses.field(default_factory=dict)
    timing: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)  # json, markdown, html
    devices: tuple[ReportRow, ...] = ()  # `evaluate --device`: each artifact's row on the device
    extra: dict = extra_field()
    _keys: tuple[str, ...] = keys_field()

    @property
    def rows(self) -> list[ReportRow]:
        """The Keras fp32 row, then one per artifact."""
        return [self.reference, *self.artifacts]

    def to_dict(self) -> dict:
        values = {"schema": REPORT_SCHEMA, "schema_version": REPORT_VERSION}
        values |= {k: getattr(self, k) for k in _HEADER}
        values |= {"reference": self.reference.to_dict(), "artifacts": [r.to_dict() for r in self.artifacts]}
        if self.devices:  # only a device run has the key
            values["devices"] = [r.to_dict() for r in self.devices]
        values |= {"timing": self.timing, "files": self.files}
        return emit(self, values)

    @classmethod
    def from_dict(cls, d, path) -> Report:
        """The structure `gate` relies on (docs/report-schema.md, "What `xception-edge gate` reads"):
        measured values are not checked here (one that is missing or not a finite number is read as
        None and fails its gate); the header tables `gate` does not read are kept as they are."""
        _check_header(d, path)
        for key in ("host", "model", "reference"):
            if not isinstance(d.get(key), dict):
                raise _bad(path, f"'{key}' must be an object", d.get(key))
        if not isinstance(d["host"].get("cpu"), str):
            raise _bad(path, "'host.cpu' must be a string", d["host"].get("cpu"))
        rows = d.get("artifacts")
        if not isinstance(rows, list) or not rows:
            raise _bad(path, "'artifacts' must be a non-empty list of artifact rows", rows)
        where = f"report {path}"
        reference = ReportRow.from_dict(d["reference"], where, "reference", strict=False, artifact=False)
        artifacts = tuple(ReportRow.from_dict(r, where, f"artifacts[{i}]", strict=False) for i, r in enumerate(rows))
        devices = d.get("devices", [])
        if not isinstance(devices, list):
            raise _bad(path, "'devices' must be a list of device rows", devices)
        devices = tuple(ReportRow.from_dict(r, where, f"devices[{i}]", strict=False) for i, r in enumerate(devices))
        extra, keys = split(d, ("schema", "schema_version", *_HEADER, "reference", "artifacts", "devices", "timing", "files"))
        given = {k: d[k] for k in (*_HEADER, "timing", "files") if k in d}
        return cls(reference, artifacts, **given, devices=devices, extra=extra, _keys=keys)


def _bad(path, what: str, got) -> RecordError:
    return RecordError(f"report {path}: {what}, got {shown(got, 40)}; {AGAIN}", what)


def _check_header(d, path) -> None:
    if not isinstance(d, dict) or d.get("schema") != REPORT_SCHEMA:
        raise BadInput(f"{path} is not an xception-edge report (schema {REPORT_SCHEMA}); write one with `xception-edge evaluate`")
    version = d.get("schema_version")
    if version != REPORT_VERSION or isinstance(version, bool):
        raise BadInput(
            f"{path} has report schema version {version!r}, this gate reads {REPORT_VERSION}; run `xception-edge evaluate` again"
        )
    try:
        json.dumps(d, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        raise BadInput(f"report {path} holds text that is not valid Unicode; {AGAIN}") from None
