"""Open a device for one backend's artifact and run the device-side runner there."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import console
from ..errors import BadInput
from ..records import Manifest
from . import emulated, zipapp
from .spec import DeviceSpec
from .transport import Completed, DeviceFailed, LocalTransport, SshTransport, Transport, env_for_device

DEFAULT_TIMEOUT = 3600.0


@dataclasses.dataclass(frozen=True)
class Device:
    """An opened device: how to reach it, its Python, and the facts the results record."""

    spec: DeviceSpec
    transport: Transport
    python: str  # the interpreter, as the transport runs it
    facts: dict  # the `device` record of the results


def _local(spec: DeviceSpec, python: str | None, keep: bool) -> Device:
    py = python or sys.executable
    if shutil.which(py) is None:
        raise BadInput(f"--device-python {py}: no such interpreter on this host")
    transport = LocalTransport(env=env_for_device(), label="local", keep=keep)
    return Device(spec, transport, py, {"spec": "local", "transport": "local", "emulated": False, "python": py})


def _emulated(spec: DeviceSpec, backend: str, python: str | None, keep: bool, cache: Path | None) -> Device:
    emulated.check_runtime(backend)
    dev = emulated.ensure((backend,), cache=cache)
    py = python or dev.python
    host_py = dev.root / py.lstrip("/")
    if not py.startswith("/") or not host_py.is_file():
        raise BadInput(f"--device-python {py}: no such file in the emulated device ({dev.root}); give an absolute path there")
    env = env_for_device({"PYTHONPATH": str(dev.site(backend))})
    transport = LocalTransport(prefix=dev.command(spec.cpu), env=env, label=spec.label, keep=keep)
    facts = {
        "spec": spec.label,
        "transport": "qemu-user",
        "emulated": True,
        "cpu_model": spec.cpu,
        "python": py,
        "qemu": dev.stamp.get("qemu"),
        "sysroot": f"Debian {dev.stamp.get('debian')} arm64",
    }
    return Device(spec, transport, str(host_py), facts)


def open_device(
    spec: DeviceSpec, backend: str, *, python: str | None = None, keep: bool = False, cache: Path | None = None
) -> Device:
    """The device ``spec`` names, ready to run ``backend``'s artifacts (the emulated one is built
    or completed first)."""
    if spec.kind == "local":
        return _local(spec, python, keep)
    if spec.kind == "emulated":
        return _emulated(spec, backend, python, keep, cache)
    py = python or "python3"
    transport = SshTransport(spec.host, user=spec.user, port=spec.port, label=spec.text, keep=keep)
    return Device(spec, transport, py, {"spec": spec.text, "transport": "ssh", "emulated": False, "python": py})


@dataclasses.dataclass(frozen=True)
class Timing:
    """How the device times an artifact: ``runs`` timed runs after ``warmup`` untimed ones, dealt
    into ``rounds`` rounds with ``cooldown`` seconds of rest before each (the first: after the
    previous artifact)."""

    runs: int = 50
    warmup: int = 5
    rounds: int = 3
    cooldown: float = 0.0
    threads: int | None = None

    def check(self) -> Timing:
        from ..latency import split_runs

        if self.runs < 1:
            raise BadInput(f"--runs {self.runs} must be at least 1")
        if self.warmup < 0:
            raise BadInput(f"--warmup {self.warmup} must not be negative")
        if self.cooldown < 0 or self.cooldown != self.cooldown or self.cooldown > 3600:
            raise BadInput(f"--cooldown {self.cooldown} must be between 0 and 3600 seconds")
        if self.threads is not None and self.threads < 1:
            raise BadInput(f"--threads {self.threads} must be at least 1")
        split_runs(self.runs, self.rounds)
        return self


def _request(timing: Timing) -> dict:
    return {
        "artifact": "artifact",
        "inputs": "inputs.npy",
        "outputs": "outputs.npy",
        "result": "result.json",
        "runs": timing.runs,
        "warmup": timing.warmup,
        "rounds": timing.rounds,
        "cooldown": timing.cooldown,
        "threads": timing.threads,
    }


def run(
    device: Device,
    folder: Path,
    manifest: Manifest,
    inputs: np.ndarray,
    timing: Timing,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[dict, np.ndarray]:
    """Push the artifact, the runner and ``inputs``; run; return (the runner's result, its outputs)."""
    with tempfile.TemporaryDirectory(prefix="xe-device-") as tmp, device.transport as t:
        here = Path(tmp)
        _stage(here, manifest, inputs, timing)
        console.info(f"{device.facts['spec']}: copying {manifest.target} and the device-side runner")
        t.put(folder, "artifact")
        for name in ("runner.pyz", "inputs.npy", "request.json"):
            t.put(here / name, name)
        console.info(
            f"{device.facts['spec']}: {manifest.target}: {timing.rounds} round(s) of {timing.warmup} warm-up + "
            f"{timing.runs} timed runs in all, then {len(inputs)} predictions"
        )
        done = t.run([device.python, "runner.pyz", "request.json"], timeout=timeout)
        result = _result(device, manifest, done, here / "result.json" if t.get("result.json", here / "result.json") else None)
        if not t.get("outputs.npy", here / "outputs.npy"):
            raise DeviceFailed(f"{device.facts['spec']}: the device-side runner wrote no outputs")
        outputs = _outputs(device, here / "outputs.npy", len(inputs), len(manifest.labels))
    return result, outputs


def _stage(here: Path, manifest: Manifest, inputs: np.ndarray, timing: Timing) -> None:
    """The runner, the inputs and the request, in this host's temporary folder; a full disk
    there is one line (exit 2), not numpy's "N requested and M written"."""
    try:
        zipapp.build(manifest.backend, here / "runner.pyz")
        np.save(here / "inputs.npy", np.ascontiguousarray(inputs, np.float32), allow_pickle=False)
        (here / "request.json").write_text(json.dumps(_request(timing)), encoding="utf-8")
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or shutil.disk_usage(here).free < inputs.nbytes + (1 << 20)
        if not full:
            raise
        raise BadInput(
            f"this host's temporary folder {here.parent} is full: it cannot hold the {inputs.nbytes / 1e6:.1f} MB of inputs "
            "for the device; free space there or point TMPDIR elsewhere"
        ) from None


def _outputs(device: Device, path: Path, images: int, classes: int) -> np.ndarray:
    """The device's outputs, checked before any comparison: (images, classes), finite numbers."""
    label = device.facts["spec"]
    try:
        outputs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DeviceFailed(f"{label}: the device-side runner wrote unreadable outputs: {str(exc)[:200]}") from None
    if outputs.shape != (images, classes) or outputs.dtype.kind not in "fiu" or not np.isfinite(outputs).all():
        raise DeviceFailed(
            f"{label}: the device-side runner wrote outputs of shape {outputs.shape} ({outputs.dtype}), expected "
            f"{(images, classes)} finite numbers; the device's runtime misbehaved"
        )
    return outputs


def _result(device: Device, manifest: Manifest, done: Completed, path: Path | None) -> dict:
    label = device.facts["spec"]
    py = device.facts["python"]
    if "XE-ERROR python" in done.stdout:
        version = done.stdout.split("XE-ERROR python", 1)[1].split()[0]
        raise BadInput(f"{label}: its Python {py} is {version}; the device side needs Python >= 3.9: pass --device-python PATH")
    if path is None:
        how = f"signal {-done.exit}" if done.exit < 0 else f"exit {done.exit}"
        last = [x.strip() for x in done.stderr.splitlines() if x.strip()][-1:] or ["no output"]
        raise DeviceFailed(f"{label}: the device-side runner stopped ({how}) before writing a result: {last[0][:300]}")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DeviceFailed(f"{label}: the device-side runner wrote an unreadable result: {str(exc)[:200]}") from None
    error = (
        result.get("error")
        if isinstance(result, dict)
        else {"message": "the device-side runner's result is not a JSON object", "exit_code": 1}
    )
    if not error:
        host, latency = result.get("host"), result.get("latency")
        if not (isinstance(host, dict) and isinstance(host.get("machine"), str) and isinstance(latency, dict)):
            raise DeviceFailed(f"{label}: the device-side runner's result lacks its host or latency record")
        return result
    if not isinstance(error, dict) or not all(isinstance(error.get(k, ""), str) for k in ("kind", "module", "message")):
        raise DeviceFailed(f"{label}: the device-side runner wrote a malformed error record")
    error.setdefault("message", "no message")
    if error.get("kind") == "missing":
        from .. import backends

        needs = " ".join([*backends.get(manifest.backend).device_requires, "numpy"])
        raise BadInput(
            f"{label}: {error.get('module', 'its runtime')} is not installed for {py}; install it there with: {py} -m pip install {needs}"
        )
    if error.get("exit_code", 2) == 2:
        raise BadInput(f"{label}: {error['message']}")
    raise DeviceFailed(f"{label}: {error['message']}")
