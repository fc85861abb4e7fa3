"""Facts about the host that decide int8 speed and accuracy, recorded in manifests and reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path

INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "asimddp", "i8mm")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in INT8_FLAGS if f in have]
    except OSError:
        pass
    return []


def host() -> dict:
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "int8_flags": cpu_flags(),
        "python": platform.python_version(),
    }
