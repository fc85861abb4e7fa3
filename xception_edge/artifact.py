"""Artifact folders: manifest read/write, sha256 checks, and atomic writes.

An artifact is ``OUT/<target>/`` holding the model file(s), ``manifest.json``, ``labels.txt``
and ``calibration.txt``. It is written into a temporary sibling folder and renamed into place,
so an interrupted conversion leaves nothing that looks like an artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .calibration import sha256_file
from .errors import BadInput

MANIFEST = "manifest.json"
SCHEMA = "xception-edge/manifest"
SCHEMA_VERSION = 1
TMP_PREFIX = ".xe-tmp-"


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}; choose a writable location") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable_dir(out: Path, option: str = "--out") -> Path:
    """Create ``out`` if needed and prove we can write there; a one-line error otherwise."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX, dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadInput(f"{option} {out} is not writable ({exc.strerror or exc}); choose a writable folder") from None
    return out


@contextlib.contextmanager
def staged_dir(final: Path, *, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success rename it into place.

    On any exception (including KeyboardInterrupt) the temporary folder is removed and an
    existing ``final`` is left untouched.
    """
    final = Path(final)
    if final.exists() and not force:
        raise BadInput(f"{final} already exists; pass --force to overwrite it")
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f"{TMP_PREFIX}{final.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_entries(folder: Path) -> dict[str, dict]:
    """sha256 and size of every file in an artifact folder except the manifest."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out[p.relative_to(folder).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def write_manifest(folder: Path, manifest: dict) -> dict:
    manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest, "files": file_entries(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: str | Path, *, check_files: bool = True) -> dict:
    """Load ``manifest.json`` and (by default) check every listed file's sha256."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BadInput(f"artifact folder {folder} does not exist")
    if not path.is_file():
        raise BadInput(f"{folder} has no {MANIFEST}; is it an artifact folder written by `xception-edge convert`?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON: {exc}; convert the model again") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise BadInput(f"{path} is not an xception-edge manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BadInput(
            f"{path} has manifest schema version {manifest.get('schema_version')}, this xception-edge reads "
            f"{SCHEMA_VERSION}; convert the model again with this version"
        )
    if check_files:
        for rel, entry in manifest.get("files", {}).items():
            fp = folder / rel
            if not fp.is_file():
                raise BadInput(f"{fp} is missing (listed in {path}); copy the whole artifact folder")
            if sha256_file(fp) != entry["sha256"]:
                raise BadInput(f"{fp} does not match its sha256 in {path}; the file is corrupt or was changed")
    return manifest
