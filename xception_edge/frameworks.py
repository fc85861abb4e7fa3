"""Guarded imports of the heavy frameworks: each is imported only inside the function that
needs it, and a missing package becomes a one-line error naming the extra to install."""

from __future__ import annotations

import importlib
import logging
import os
import warnings

from .errors import BackendUnavailable


def _quiet_env() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def tensorflow():
    """tensorflow, with its log noise turned down (unless --verbose kept it)."""
    _quiet_env()
    try:
        tf = importlib.import_module("tensorflow")
    except ImportError:
        raise BackendUnavailable("tensorflow", "convert") from None
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "0":
        tf.get_logger().setLevel(logging.ERROR)
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:
            pass
        for mod in ("tensorflow", "keras", "absl", "tf2onnx", "h5py"):
            warnings.filterwarnings("ignore", module=mod)
    return tf


def keras():
    tensorflow()
    try:
        return importlib.import_module("keras")
    except ImportError:
        raise BackendUnavailable("keras", "convert") from None


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
        return tensorflow().lite.Interpreter
    raise BackendUnavailable("ai-edge-litert (LiteRT)", "device")
