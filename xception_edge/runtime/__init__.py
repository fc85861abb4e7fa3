"""One runtime interface for every backend: load an artifact folder (manifest sha256 values
checked first), report its input/output specs, and predict preprocessed float images to class
probabilities. Each backend module is imported only when its artifact is opened."""

from __future__ import annotations

from pathlib import Path

from ..artifact import read_manifest
from ..records import Manifest
from .base import Runtime


def open_artifact(folder: str | Path, *, threads: int | None = None, manifest: Manifest | None = None) -> Runtime:
    """The artifact in ``folder`` opened with its backend's runtime (``manifest``: already read)."""
    from .. import backends

    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    spec = backends.get(manifest.backend, f"{folder}/manifest.json")
    return spec.runtime_class()(folder, manifest, threads=threads)


__all__ = ["Runtime", "open_artifact"]
