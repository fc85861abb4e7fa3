"""Artifact folders and output folders: staged writes, the output-folder lock, manifests.

An artifact is ``OUT/<target>/`` holding the model file(s), ``manifest.json``, ``labels.txt``
and ``calibration.txt``. It is written into a temporary sibling folder and renamed into place,
so an interrupted conversion leaves nothing that looks like an artifact. A run that writes into
an output folder holds an exclusive lock on it (``OUT/.xe-lock``, ``flock``): a second run on the
same folder fails at once with a one-line error instead of mixing its files with the first's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator

from . import console, interrupts
from .hashing import sha256_file
from .errors import BadInput
from .records import MANIFEST, MANIFEST_SCHEMA, MANIFEST_VERSION, Manifest, plain_name

SCHEMA = MANIFEST_SCHEMA
SCHEMA_VERSION = MANIFEST_VERSION
TMP_PREFIX = ".xe-tmp-"
LOCK = ".xe-lock"
_STARTED = time.time()  # temporary files older than this process were left by a run that died


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def _writing_error(path: Path, exc: OSError) -> BadInput:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BadInput(f"cannot write {path}: the disk is full; free space or choose another location")
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return BadInput(f"cannot write {path}: it is a folder; pass a file path")
    return BadInput(f"cannot write {path}: {exc.strerror or exc}; choose a writable location")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file in the same folder, renamed into place."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"cannot write {path}: it is a folder; pass a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    except OSError as exc:
        raise _writing_error(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        interrupts.check()
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _writing_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_output_file(path: Path | str | None, option: str) -> None:
    """Before any work: ``option PATH`` (a file the run writes at the end) can be written."""
    if path is None or str(path) == "-":
        return
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{option} {path} is a folder; pass a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{option} {path} cannot be written ({parent} is not a writable folder); choose a writable location")
    if path.exists() and not path.is_file():
        raise BadInput(f"{option} {path} is not a regular file; pass a new or regular file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise BadInput(f"{option} {path} is not writable; choose a writable location")


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


def child_dir(parent: Path, name: str, what: str) -> Path:
    """``parent / name`` for a plain name; checked to lie directly inside ``parent``."""
    plain_name(name, what)
    path = Path(parent) / name
    if path.resolve().parent != Path(parent).resolve():
        raise BadInput(f"{what} {name!r} would write outside {parent}")
    return path


@contextlib.contextmanager
def output_lock(folder: Path, option: str) -> Iterator[Path]:
    """Hold an exclusive lock on an output folder for the whole run (creating the folder).

    A second run on the same folder fails at once (exit 2) naming the process that holds it.
    Temporary files left in the folder by a run that was killed are removed, with a message.
    A folder this call created is removed again if the run left it empty.
    """
    import fcntl

    created = not Path(folder).exists()
    folder = check_writable_dir(folder, option)
    lock_path = folder / LOCK
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BadInput(
                f"{option} {folder} is in use by another xception-edge run (pid {holder}); wait for it to "
                f"finish or choose another {option}"
            ) from None
        try:  # the file may have been unlinked by the previous holder between our open and flock
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        remove_stale_temporaries(folder)
        yield folder
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)
        if created:  # a run that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove ``.xe-tmp-*`` files and folders (in ``folder`` and one level below) that are older
    than this process: a run that was killed left them. Called while holding the folder's lock."""
    stale = []
    for parent in [folder, *(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())]:
        with contextlib.suppress(OSError):
            for p in parent.iterdir():
                if p.name.startswith(TMP_PREFIX) and p.lstat().st_mtime < _STARTED:
                    stale.append(p)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    if stale:
        console.info(
            f"removed {len(stale)} temporary file(s) left by an interrupted run in {folder}: "
            f"{', '.join(p.name for p in stale[:3])}{' …' if len(stale) > 3 else ''}"
        )
    return stale


@contextlib.contextmanager
def staged_dir(final: Path, *, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success rename it into place.

    On any exception (including KeyboardInterrupt) the temporary folder is removed and an
    existing ``final`` is left untouched. The folder gets the permissions the umask allows.
    """
    final = Path(final)
    if final.exists() and not force:
        raise BadInput(f"{final} already exists; pass --force to overwrite it")
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        interrupts.check()  # an interrupt swallowed inside a framework still stops the commit
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


def write_manifest(folder: Path, manifest: Manifest | dict) -> Manifest | dict:
    """Write ``manifest.json`` with every file of the folder and its sha256; return the manifest
    written (a ``Manifest`` for a ``Manifest``, else the dict)."""
    files = file_entries(folder)
    if isinstance(manifest, Manifest):
        manifest = dataclasses.replace(manifest, files=files)
        data = manifest.to_dict()
    else:
        manifest = data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest, "files": files}
    (folder / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: str | Path) -> Manifest:
    """Load ``manifest.json``, validate every field (``Manifest.from_dict``), and check every file:
    each listed file must exist with its sha256, and the folder may hold no file the manifest does not list."""
    folder = Path(folder)
    path = folder / MANIFEST
    if folder.is_file():
        raise BadInput(f"{folder} is a file; pass the artifact folder (the one holding {MANIFEST}), e.g. {folder.parent}")
    if not folder.is_dir():
        raise BadInput(f"artifact folder {folder} does not exist")
    if not path.is_file():
        raise BadInput(f"{folder} has no {MANIFEST}; is it an artifact folder written by `xception-edge convert`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"{path} is not valid JSON: {str(exc)[:200]}; convert the model again") from None
    manifest = Manifest.from_dict(data, path, folder)
    for rel, entry in manifest.files.items():
        fp = folder / rel
        if not fp.is_file():
            raise BadInput(f"{fp} is missing (listed in {path}); copy the whole artifact folder")
        if sha256_file(fp) != entry["sha256"]:
            raise BadInput(f"{fp} does not match its sha256 in {path}; the file is corrupt or was changed")
    listed = set(manifest.files) | {MANIFEST}
    extra = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.relative_to(folder).as_posix() not in listed
    )
    if extra:
        raise BadInput(
            f"{folder} holds file(s) its manifest does not list: {', '.join(extra[:3])}; remove them or "
            "copy the artifact folder again"
        )
    return manifest
