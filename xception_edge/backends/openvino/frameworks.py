"""OpenVINO's guarded imports: openvino (runtime and model conversion) and NNCF, telemetry off."""

from __future__ import annotations

import logging
import os
import sys

from ... import frameworks


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
    return frameworks.require("openvino", "openvino")


def nncf():
    """nncf (OpenVINO post-training int8 quantization), build host only, quiet by default."""
    openvino()
    mod = frameworks.require("nncf", "convert")
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "0":
        mod.set_log_level(logging.ERROR)
    return mod
