"""OUT/cells/<cell>/cell.json: a finished cell's record, written once the cell is done, for
``sweep --resume``. It is keyed by everything that decides the cell (the model's and the
validation images' sha256, the cell's profile, size, seed and transforms, the preprocessing, and
the calibration source's file list); it is read back from disk, so it is checked (shape, key, and
the artifact it names against its manifest) and computed again, with a warning, when it is not
usable."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .. import console
from ..artifact import atomic_write_text
from ..errors import XceptionEdgeError
from .grid import Cell

FILE = "cell.json"
VERSION = 1
_FIELDS = {"name": str, "top1": float, "top5": float, "drop_pp": float, "agreement": float, "predictions": dict}
_FIELDS |= {"artifact": str, "manifest_sha256": str, "model_sha256": str}


def calibration_listing(source) -> str:
    """sha256 of the calibration source's files: relative path, size and modification time (no
    image is read: a file changed in place has a new modification time)."""
    h = hashlib.sha256(f"{source.origin}\n".encode())
    for path, want in zip(source.files, source.expected_sha256 or (None,) * len(source.files)):
        st = path.stat()
        h.update(f"{source.rel(path)}\t{st.st_size}\t{st.st_mtime_ns}\t{want or ''}\n".encode())
    return h.hexdigest()


def cell_key(ctx, ref: dict, cell: Cell, listing: str) -> str:
    from .profile import cell_profile

    profile = cell_profile(ctx.profile, ctx.setting, cell).to_dict()
    parts = {
        "version": VERSION,
        "model": ref["model_sha256"],
        "validation": ref["data_sha256"],
        "preprocessing": ref["spec"].to_dict(),
        "labels": ref["labels"],
        "profile": {k: v for k, v in profile.items() if k != "source"},
        "cell": cell.to_dict(),
        "calibration": listing,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def save(folder: Path, key: str, record: dict) -> None:
    atomic_write_text(folder / FILE, json.dumps({"key": key, "cell": record}, indent=1) + "\n")


def forget(folder: Path) -> None:
    """Before a cell runs again: its earlier record no longer describes its folder."""
    (folder / FILE).unlink(missing_ok=True)


def _is(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def _problem(data, key: str, name: str) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("cell"), dict):
        return "it is not a cell record"
    if data.get("key") != key:
        return "it was made with other settings or inputs"
    cell = data["cell"]
    if cell.get("name") != name or cell.get("ok") is not True:
        return "it is not this cell's finished record"
    for field, kind in _FIELDS.items():
        if not _is(cell.get(field), kind):
            return f"its {field} is not {'a finite number' if kind is float else 'a ' + kind.__name__}"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in cell["predictions"].items()):
        return "its predictions do not map images to classes"
    return None


def load(out: Path, folder: Path, key: str, name: str) -> dict | None:
    """The cell's finished record when it is usable and its artifact is intact, else None."""
    from ..artifact import read_manifest
    from ..hashing import sha256_file

    path = folder / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        console.warn(f"{path} is unreadable ({type(exc).__name__}); running cell {name} again")
        return None
    problem = _problem(data, key, name)
    if problem is None:
        art = out / data["cell"]["artifact"]
        try:
            read_manifest(art)  # every file against its sha256
            if sha256_file(art / "manifest.json") != data["cell"]["manifest_sha256"]:
                problem = "its artifact's manifest changed"
        except (XceptionEdgeError, OSError) as exc:
            problem = f"its artifact is not intact: {exc}"
    if problem is not None:
        console.warn(f"{path} cannot be reused ({problem}); running cell {name} again")
        return None
    return {**data["cell"], "reused": True}
