"""The device side, shipped in a zipapp with only the modules it imports (numpy and the artifact's
runtime are all the device needs; Python >= 3.9). ``python runner.pyz request.json``:

1. reads and checks the artifact's manifest (every file's sha256), as ``read_manifest`` does;
2. opens it with its backend's runtime and runs ``bench``'s timing loop (``latency.time_invoke``
   on the first input, in the artifact's dtype and batch);
3. predicts every input (``inputs.npy``: preprocessed float images) to ``outputs.npy``;
4. writes ``result.json``: latency, the device's host info and runtime versions, or
   ``{"error": {...}}`` (exit 2 for a missing runtime or bad input).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ARM_PARTS = {  # /proc/cpuinfo "CPU part" of ARM Ltd. (implementer 0x41) cores
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd47": "Cortex-A710",
    "0xd49": "Neoverse-N2",
    "0xd4b": "Cortex-A78C",
}


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (lower-case keys), and the board's Model line."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key not in fields:
            fields[key] = value.strip()
    return fields


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def device_info(distributions: list[str]) -> dict:
    """The device's host info (``hostinfo.host()``'s fields) plus its OS, CPU core, full CPU
    features, Python executable and the versions of ``distributions``."""
    from importlib import metadata

    from ..hostinfo import host

    info = host()
    cpu = _cpuinfo()
    part = ARM_PARTS.get(cpu.get("cpu part", "")) if cpu.get("cpu implementer") == "0x41" else None
    info.update(
        os=_os_release(),
        kernel=platform.release(),
        cpu_core=part or cpu.get("cpu part", ""),
        board="" if cpu.get("model", "").isdigit() else cpu.get("model", ""),  # x86: a model number
        cpu_features=(cpu.get("features") or cpu.get("flags") or "").split(),
        python_executable=sys.executable,
    )
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info["runtime"] = versions
    return info


def _bench(request: dict) -> dict:
    import numpy as np

    from .. import backends
    from ..artifact import read_manifest
    from ..latency import measure, peak_rss_mb

    folder = Path(request["artifact"])
    manifest = read_manifest(folder)
    spec = backends.get(manifest.backend, f"{folder}/manifest.json")
    runtime_class = spec.runtime_class()
    inputs = np.load(request["inputs"], allow_pickle=False)
    t0 = time.perf_counter()
    rt = runtime_class(folder, manifest, threads=request.get("threads"))
    load_ms = (time.perf_counter() - t0) * 1000
    stats = measure(
        rt,
        inputs[:1],
        runs=int(request["runs"]),
        warmup=int(request["warmup"]),
        load_ms=load_ms,
        rounds=int(request.get("rounds", 1)),
        cooldown_s=float(request.get("cooldown", 0.0)),
    )
    np.save(request["outputs"], rt.predict(inputs), allow_pickle=False)
    return {
        "latency": stats.to_dict(),
        "kernels": rt.note,
        "host": device_info([*spec.device_requires, "numpy"]),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def _error(kind: str, message: str, **extra) -> dict:
    return {"error": {"kind": kind, "message": message, **extra}}


def main(argv: list[str]) -> int:
    """Run the request in ``argv[0]``; write its result file; 0, or the error's exit code."""
    from ..errors import BackendUnavailable, XceptionEdgeError

    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    code = 0
    try:
        result = _bench(request)
    except BackendUnavailable as exc:
        result, code = _error("missing", str(exc), module=exc.package), 2
    except ImportError as exc:  # numpy itself (a toolkit module missing from the zipapp is a bug)
        name = exc.name or str(exc)
        kind = "bug" if name.startswith("xception_edge") else "missing"
        result, code = _error(kind, f"{name} is not installed", module=name), 2 if kind == "missing" else 1
    except XceptionEdgeError as exc:
        result, code = _error("failed", str(exc), exit_code=exc.exit_code), exc.exit_code
    except Exception as exc:  # the runtime's own failure: one line, exit 1
        text = next((x.strip() for x in str(exc).splitlines() if x.strip()), "")
        result, code = _error("failed", f"{type(exc).__name__}: {text[:300]}", exit_code=1), 1
    result["python"] = {"executable": sys.executable, "version": platform.python_version()}
    tmp = Path(request["result"] + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, request["result"])
    return code
