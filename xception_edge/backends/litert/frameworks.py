"""LiteRT's guarded import: the interpreter, from whichever package the device has."""

from __future__ import annotations

import importlib.util

from ... import frameworks
from ...errors import BackendUnavailable


def litert_interpreter():
    """The LiteRT Interpreter class: ai_edge_litert, then tflite_runtime (numpy<2 device
    images), then tf.lite as a last resort."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # old device images (numpy<2 only)

        return Interpreter
    except ImportError:
        pass
    if importlib.util.find_spec("tensorflow") is not None:
        return frameworks.tensorflow().lite.Interpreter
    raise BackendUnavailable("ai-edge-litert (LiteRT)", "device")
