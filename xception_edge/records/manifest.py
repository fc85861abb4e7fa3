"""``Manifest``: an artifact's ``manifest.json``, and ``TensorSpec``, its model's input/output.

``Manifest.from_dict`` is the one place a manifest read from disk is checked, field by field,
before any file it names is opened; ``to_dict`` gives back the same JSON (keys it does not read
included)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInput
from .base import emit, extra_field, fail, is_finite_number, is_text_list, is_whole, keys_field, plain_name, relative_file, split
from .budget import BudgetRecord
from .verification import Verification

if TYPE_CHECKING:
    from .preprocessing import PreprocessSpec

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "xception-edge/manifest"
MANIFEST_VERSION = 1
DTYPES = ("float32", "int8", "uint8")
PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Files a model file needs beside it, by suffix (OpenVINO's .xml reads the .bin of the same stem).
_COMPANIONS = {".xml": (".bin",)}
# Records of what happened, kept as tables: each a table (or null) when present.
TABLES = ("source_model", "host", "tools", "calibration", "conversion", "profile", "transforms")
_STRINGS = ("description", "hardware", "labels_from", "created")
# The keys in the order convert writes them.
ORDER = (
    "schema", "schema_version", "target", "description", "hardware", "backend", "format", "precision", "threads",
    "model_file", "io", "source_model", "preprocessing", "labels", "labels_from", "host", "tools", "calibration",
    "conversion", "profile", "transforms", "created", "accuracy_budget", "verification", "files",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input/output as the artifact sees it; scale/zero_point for quantized tensors."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, spec, where="tensor", key: str = "tensor") -> TensorSpec:
        if not isinstance(spec, dict):
            raise fail(where, key, "a table", spec)
        if not isinstance(spec.get("name"), str):
            raise fail(where, f"{key}.name", "a string", spec.get("name"))
        if spec.get("dtype") not in DTYPES:
            raise fail(where, f"{key}.dtype", f"one of {', '.join(DTYPES)}", spec.get("dtype"))
        shape = spec.get("shape")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(is_whole(d) and d >= -1 for d in shape):
            raise fail(where, f"{key}.shape", "a list of dimensions", shape)
        scale, zp = spec.get("scale", 0.0), spec.get("zero_point", 0)
        if not is_finite_number(scale) or scale < 0 or (spec["dtype"] != "float32" and scale <= 0):
            raise fail(where, f"{key}.scale", "a positive finite number for a quantized tensor", scale)
        if not is_whole(zp) or not -(2**31) <= zp < 2**31:
            raise fail(where, f"{key}.zero_point", "an integer", zp)
        return cls(spec["name"], spec["dtype"], tuple(shape), float(scale), zp)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What the toolkit reads from an artifact's manifest; the rest of its tables as written."""

    target: str
    backend: str
    format: str
    precision: str
    model_file: str
    input: TensorSpec  # on disk: io.input
    output: TensorSpec  # on disk: io.output
    labels: tuple[str, ...]
    preprocessing: PreprocessSpec
    files: dict = dataclasses.field(default_factory=dict)  # relative path -> {sha256, bytes}; filled by write_manifest
    threads: int | None = None
    description: str | None = None
    hardware: str | None = None
    labels_from: str | None = None
    source_model: dict | None = None  # spec, kind, sha256 of the model converted
    host: dict | None = None  # hostinfo.host() of the converting machine
    tools: dict | None = None  # distribution -> version
    calibration: dict | None = None  # CalibrationSet.summary(); null without calibration
    conversion: dict | None = None  # seconds and the backend's own facts
    profile: dict | None = None  # TargetProfile.to_dict()
    transforms: dict | None = None  # [quantization] transforms applied: {applied, seconds, images, records}
    created: str | None = None
    accuracy_budget: BudgetRecord | None = None  # convert --max-drop
    verification: Verification | None = None
    verification_skipped: str | None = None  # on disk {"skipped": why}, e.g. "--no-verify"
    extra: dict = extra_field()
    _keys: tuple[str, ...] = keys_field()

    # ---------------------------------------------------------- what several readers need
    @property
    def source_sha256(self) -> str | None:
        """sha256 of the model the artifact was converted from, when recorded."""
        return (self.source_model or {}).get("sha256")

    @property
    def int8_flags(self) -> tuple[str, ...]:
        """int8-relevant CPU flags of the machine that converted it."""
        return tuple((self.host or {}).get("int8_flags") or ())

    @property
    def model_bytes(self) -> int:
        """Size of the model file(s): every listed file but labels/calibration/JSON."""
        return sum(e["bytes"] for name, e in self.files.items() if not name.endswith((".txt", ".json", ".npz")))

    @property
    def float_layers(self) -> tuple[str, ...]:
        """Layers an int8 artifact keeps in float (--max-drop's choice, else the profile's ignored scope)."""
        if self.accuracy_budget is not None:
            return self.accuracy_budget.float_layers
        return tuple(((self.profile or {}).get("quantization") or {}).get("ignored_scope") or ())

    def fact(self, table: str, key: str, default=None):
        """One value of a record table (``conversion``, ``calibration``, …), or ``default``."""
        return (getattr(self, table) or {}).get(key, default)

    # ---------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        values = {"schema": MANIFEST_SCHEMA, "schema_version": MANIFEST_VERSION}
        for key in ORDER[2:]:
            if key == "io":
                values["io"] = {"input": self.input.to_dict(), "output": self.output.to_dict()}
            elif key == "verification" and self.verification_skipped is not None:
                values["verification"] = {"skipped": self.verification_skipped}
            else:
                values[key] = _plain(getattr(self, key))
        return emit(self, values, always=lambda key: key not in ("accuracy_budget", "transforms"))

    @classmethod
    def from_dict(cls, d, where: Path, folder: Path) -> Manifest:
        """Check every field the toolkit reads (``where``: the manifest's path, for messages;
        ``folder``: the artifact folder every file must lie in)."""
        _check_header(d, where)
        files = _files(d.get("files"), where, folder)
        _check_model_file(d["model_file"], files, where, folder)
        io = d.get("io")
        if not isinstance(io, dict):
            raise fail(where, "io", "a table with input and output", io)
        inp, out = (
            TensorSpec.from_dict(io.get("input"), where, "io.input"),
            TensorSpec.from_dict(io.get("output"), where, "io.output"),
        )
        labels = d.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise fail(where, "labels", "a non-empty list of class names", labels)
        if "threads" in d and not (is_whole(d["threads"]) and 1 <= d["threads"] <= 1024):
            raise fail(where, "threads", "an integer from 1 to 1024", d["threads"])
        spec = _preprocessing(d.get("preprocessing"), where)
        _check_tables(d, where)
        verification, skipped = _verification(d.get("verification"), where)
        budget = d.get("accuracy_budget")
        extra, keys = split(d, ORDER)
        return cls(
            **{k: d[k] for k in ("target", "backend", "format", "precision", "model_file")},
            input=inp,
            output=out,
            labels=tuple(labels),
            preprocessing=spec,
            files=files,
            **{k: d.get(k) for k in ("threads", *_STRINGS, *TABLES)},
            accuracy_budget=None if budget is None else BudgetRecord.from_dict(budget, where),
            verification=verification,
            verification_skipped=skipped,
            extra=extra,
            _keys=keys,
        )


def _plain(v):
    if hasattr(v, "to_dict"):
        return v.to_dict()
    return list(v) if isinstance(v, tuple) else v


def _check_header(d, where: Path) -> None:
    if not isinstance(d, dict) or d.get("schema") != MANIFEST_SCHEMA:
        raise BadInput(f"{where} is not an xception-edge manifest")
    if d.get("schema_version") != MANIFEST_VERSION:
        raise BadInput(
            f"{where} has manifest schema version {d.get('schema_version')!r}, this xception-edge reads "
            f"{MANIFEST_VERSION}; convert the model again with this version"
        )
    plain_name(d.get("target"), f"{where}: target")
    for key in ("backend", "format", "model_file"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise fail(where, key, "a non-empty string", d.get(key))
    if d.get("precision") not in PRECISIONS:
        raise fail(where, "precision", f"one of {', '.join(PRECISIONS)}", d.get("precision"))


def _files(files, where: Path, folder: Path) -> dict:
    if not isinstance(files, dict) or not files:
        raise fail(where, "files", "a table of every file with its sha256", files)
    for rel, entry in files.items():
        relative_file(rel, folder, f"{where}: file")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"]):
            raise fail(where, f"files.{rel}", "a table with a 64-hex-digit sha256", entry)
        if not is_whole(entry.get("bytes")) or entry["bytes"] < 0:
            raise fail(where, f"files.{rel}.bytes", "a non-negative integer", entry.get("bytes"))
    return files


def _check_model_file(model_file: str, files: dict, where: Path, folder: Path) -> None:
    relative_file(model_file, folder, f"{where}: model_file")
    needed = [model_file] + [model_file[: -len(s)] + c for s, cs in _COMPANIONS.items() if model_file.endswith(s) for c in cs]
    for rel in needed:
        if rel not in files:
            raise BadInput(
                f"{where}: {rel} is used by the artifact but not listed under 'files' with its sha256; convert the model again"
            )


def _preprocessing(p, where: Path) -> PreprocessSpec:
    from .preprocessing import PreprocessSpec

    if not isinstance(p, dict):
        raise fail(where, "preprocessing", "a table", p)
    for key in ("height", "width"):
        if not is_whole(p.get(key)) or not 1 <= p[key] <= 16384:
            raise fail(where, f"preprocessing.{key}", "an integer from 1 to 16384", p.get(key))
    if "crop_fraction" in p and not is_finite_number(p["crop_fraction"]):
        raise fail(where, "preprocessing.crop_fraction", "a number", p["crop_fraction"])
    for key in ("resize", "interpolation", "scaling", "layout", "channels"):
        if key in p and not isinstance(p[key], str):
            raise fail(where, f"preprocessing.{key}", "a string", p[key])
    try:
        return PreprocessSpec.from_dict(p)
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


# The fields of the record tables that readers use: (table, key, what it must be, check).
_TABLE_FIELDS = (
    ("source_model", "sha256", "a string", lambda v: isinstance(v, str)),
    ("host", "int8_flags", "a list of strings", is_text_list),
    ("calibration", "count", "a positive integer", lambda v: is_whole(v) and v >= 1),
    ("calibration", "seed", "a non-negative integer", lambda v: is_whole(v) and v >= 0),
    ("calibration", "source", "a string", lambda v: isinstance(v, str)),
    ("calibration", "list_sha256", "a string", lambda v: isinstance(v, str)),
    ("profile", "quantization", "a table", lambda v: isinstance(v, dict)),
)


def _check_tables(d: dict, where: Path) -> None:
    for key in (*TABLES, "verification", "accuracy_budget"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise fail(where, key, "a table", d[key])
    for key in _STRINGS:
        if d.get(key) is not None and not isinstance(d[key], str):
            raise fail(where, key, "a string", d[key])
    for table, key, want, ok in _TABLE_FIELDS:
        value = (d.get(table) or {}).get(key)
        if value is not None and not ok(value):
            raise fail(where, f"{table}.{key}", want, value)
    scope = ((d.get("profile") or {}).get("quantization") or {}).get("ignored_scope")
    if scope is not None and not is_text_list(scope):
        raise fail(where, "profile.quantization.ignored_scope", "a list of layer names", scope)


def _verification(v, where: Path) -> tuple[Verification | None, str | None]:
    if isinstance(v, dict) and set(v) == {"skipped"}:
        if not isinstance(v["skipped"], str):
            raise fail(where, "verification.skipped", "a string (why verification was skipped)", v["skipped"])
        return None, v["skipped"]
    return (None if v is None else Verification.from_dict(v, where)), None
