"""ONNX Runtime's guarded imports: the runtime, and its static quantizer on the build host."""

from __future__ import annotations

import importlib
import importlib.util

from ... import frameworks
from ...errors import BackendUnavailable


def onnxruntime(extra: str = "onnxruntime"):
    """onnxruntime; the runtime side names the 'onnxruntime' extra, the converter 'convert'."""
    return frameworks.require("onnxruntime", extra)


def ort_quantization():
    """onnxruntime.quantization (static QDQ quantization; its shape inference needs onnx and sympy)."""
    onnxruntime("convert")
    frameworks.onnx()
    if importlib.util.find_spec("sympy") is None:
        raise BackendUnavailable("sympy", "convert")
    return importlib.import_module("onnxruntime.quantization")
