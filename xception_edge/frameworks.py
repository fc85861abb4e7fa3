"""Guarded imports of the heavy frameworks: each is imported only inside the function that
needs it, and a missing package becomes a one-line error naming the extra to install."""

from __future__ import annotations

import importlib
import logging
import os
import sys
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


def onnxruntime(extra: str = "onnxruntime"):
    """onnxruntime; the runtime side names the 'onnxruntime' extra, the converter 'convert'."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise BackendUnavailable("onnxruntime", extra) from None


def onnx():
    try:
        return importlib.import_module("onnx")
    except ImportError:
        raise BackendUnavailable("onnx", "convert") from None


def tf2onnx():
    tensorflow()
    try:
        return importlib.import_module("tf2onnx")
    except ImportError:
        raise BackendUnavailable("tf2onnx", "convert") from None


def ort_quantization():
    """onnxruntime.quantization (static QDQ quantization; its shape inference needs onnx and sympy)."""
    onnxruntime("convert")
    onnx()
    if importlib.util.find_spec("sympy") is None:
        raise BackendUnavailable("sympy", "convert")
    return importlib.import_module("onnxruntime.quantization")


def _no_telemetry() -> None:
    """OpenVINO's model converter and NNCF send usage telemetry (from child processes that try to
    reach the internet, and after writing a client id under ~/intel) unless the openvino_telemetry
    package cannot be imported: then both use their own no-op stubs. Blocking that import, for
    this process only, turns it off without touching the user's files or environment."""
    sys.modules.setdefault("openvino_telemetry", None)


def openvino():
    """openvino (runtime and model conversion); the runtime-only extra is enough for it.
    Telemetry is off for every OpenVINO and NNCF call the toolkit makes."""
    _no_telemetry()
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise BackendUnavailable("openvino", "openvino") from None


def nncf():
    """nncf (OpenVINO post-training int8 quantization), build host only, quiet by default."""
    openvino()
    try:
        mod = importlib.import_module("nncf")
    except ImportError:
        raise BackendUnavailable("nncf", "convert") from None
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "0":
        mod.set_log_level(logging.ERROR)
    return mod
