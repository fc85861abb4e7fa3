"""One runtime interface for every backend: load an artifact folder (manifest sha256 values
checked first), report its input/output specs, and predict preprocessed float images to class
probabilities. Each backend module is imported only when its artifact is opened."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..artifact import read_manifest
from ..errors import BadInput
from .base import Runtime

_MODULES = {
    "litert": "xception_edge.runtime.litert",
    "openvino": "xception_edge.runtime.openvino",
    "onnxruntime": "xception_edge.runtime.onnxruntime",
}


def open_artifact(folder: str | Path, *, threads: int | None = None, manifest: dict | None = None) -> Runtime:
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    backend = manifest.get("backend")
    if backend not in _MODULES:
        raise BadInput(f"{folder}: backend {backend!r} has no runtime in this xception-edge ({', '.join(_MODULES)})")
    module = importlib.import_module(_MODULES[backend])
    return module.RUNTIME(folder, manifest, threads=threads)


__all__ = ["Runtime", "open_artifact"]
