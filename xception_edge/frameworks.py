"""Guarded imports of the heavy frameworks: each is imported only inside the function that
needs it, and a missing package becomes a one-line error naming the extra to install.

Here: the source side every converter shares (TensorFlow, Keras, and the ONNX export) and
``require``, the guard itself. A backend's own packages, with their quirks (a fallback chain,
telemetry to block, a log level), are guarded in its package: ``backends/<name>/frameworks.py``."""

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
    tf = require("tensorflow", "convert")
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


def require(module: str, extra: str):
    """``module``, imported; if it is missing, BackendUnavailable naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable(module, extra) from None


def keras():
    tensorflow()
    return require("keras", "convert")


def onnx():
    return require("onnx", "convert")


def tf2onnx():
    tensorflow()
    return require("tf2onnx", "convert")
