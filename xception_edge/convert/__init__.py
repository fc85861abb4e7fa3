"""Converters: one module per backend, imported only when a target of that backend is built."""

from __future__ import annotations

import importlib

from ..types import Backend
from .base import ConvertedModel

_MODULES = {
    Backend.LITERT: "xception_edge.convert.tflite",
    Backend.OPENVINO: "xception_edge.convert.openvino",
    Backend.ONNXRUNTIME: "xception_edge.convert.onnx",
}


def converter_for(backend: Backend):
    """The backend's ``convert(source, profile, calibration, stage, workdir)`` function."""
    from ..errors import BadInput

    if backend not in _MODULES:
        raise BadInput(f"backend {backend.value} has no converter in this xception-edge yet")
    return importlib.import_module(_MODULES[backend]).convert


__all__ = ["ConvertedModel", "converter_for"]
