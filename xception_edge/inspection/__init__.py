"""Per-layer quantization error of an int8 artifact against its fp32 source (`xception-edge inspect`),
and the ranking of layers to keep in float (`convert --max-drop`). One module per backend, each
using the backend's own facility, imported only when an artifact of that backend is inspected."""

from __future__ import annotations

import importlib

from ..errors import BadInput

_MODULES = {
    "litert": "xception_edge.inspection.tflite",
    "openvino": "xception_edge.inspection.openvino",
    "onnxruntime": "xception_edge.inspection.onnxruntime",
}


def backend_module(backend: str):
    """The module with ``measure(ctx) -> list[LayerError]`` for ``backend``."""
    if backend not in _MODULES:
        raise BadInput(f"backend {backend!r} has no per-layer inspection ({', '.join(_MODULES)})")
    return importlib.import_module(_MODULES[backend])
