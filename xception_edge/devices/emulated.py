"""The emulated arm64 device: Debian bookworm's aarch64 CPython 3.11 (a sysroot unpacked from
its .deb files) run under QEMU 10's user-mode emulator, with one folder of aarch64 wheels per
runtime. Built once under the toolkit's cache, ``devices/emulated-arm64-v1/``:

    root/             the sysroot (python3.11, libc, libstdc++, libgomp)
    qemu/             Debian trixie's qemu-user (static-pie: runs on any x86-64 Linux)
    sites/<backend>/  numpy and the backend's runtime (installed on first use)
    stamp.json        the versions of Python, QEMU and each runtime

Each part is staged in a temporary folder and renamed into place, so nothing half-built is ever
used; a lock keeps two runs from building at once. No root, no change outside the cache.
QEMU 7.2 (Debian 12's) is not used: LiteRT 2.2+ and ONNX Runtime 1.28+ crash under it, and with
its default CPU LiteRT 2.1 computes wrong int8 outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .. import console
from ..errors import BadInput
from . import debian
from .transport import env_for_device

NAME = "emulated-arm64-v1"
SUITE = "bookworm"
PYTHON = "python3.11"
SYSROOT_PACKAGES = ("python3.11", "libstdc++6", "libgcc-s1", "libgomp1")
QEMU_SUITE, QEMU_PACKAGE = "trixie", "qemu-user"
# The runtimes' versions verified under QEMU 10 are each BackendSpec's ``emulated_versions``;
# numpy<2.3: the newest numpy with aarch64 wheels for every runtime here.
NUMPY = "numpy<2.3"
PLATFORMS = ("manylinux_2_35", "manylinux_2_31", "manylinux_2_28", "manylinux_2_27", "manylinux_2_17", "manylinux2014")


def cache_root(cache: Path | None = None) -> Path:
    """``cache`` or ``$XCEPTION_EDGE_CACHE`` or ``~/.cache/xception-edge``, then ``devices/``."""
    if cache is None:
        env = os.environ.get("XCEPTION_EDGE_CACHE")
        cache = Path(env).expanduser() if env else Path.home() / ".cache" / "xception-edge"
    return Path(cache) / "devices"


@dataclasses.dataclass(frozen=True)
class EmulatedDevice:
    """A built emulated device (its folder and stamp)."""

    folder: Path
    stamp: dict

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def qemu(self) -> Path:
        return self.folder / "qemu" / "usr" / "bin" / "qemu-aarch64"

    @property
    def python(self) -> str:
        """The device's interpreter, a path inside its root."""
        return f"/usr/bin/{PYTHON}"

    def site(self, backend: str) -> Path:
        return self.folder / "sites" / backend

    def command(self, cpu: str) -> list[str]:
        """The prefix that runs an aarch64 program of the root on CPU model ``cpu``."""
        return [str(self.qemu), "-cpu", cpu, "-L", str(self.root)]

    def runtime_versions(self, backend: str) -> dict[str, str]:
        return dict(self.stamp.get("runtimes", {}).get(backend, {}))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".xe-tmp-{path.name}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(devices: Path) -> Iterator[None]:
    import fcntl

    devices.mkdir(parents=True, exist_ok=True)
    fd = os.open(devices / f".{NAME}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            console.info(f"waiting for another xception-edge run to finish building {devices / NAME}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final``, renamed into place on success and removed otherwise
    (Ctrl-C included). Leftovers of a killed run are removed first (we hold the lock)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".xe-tmp-{final.name}-*"):
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".xe-tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build_base(folder: Path) -> dict:
    """Sysroot and QEMU into ``folder``; returns the stamp."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xe-apt-") as apt:
        console.info(f"{NAME}: downloading Debian {SUITE} arm64 {PYTHON} and its libraries (about 15 MB)")
        debs = debian.fetch(Path(apt) / "arm64", arch="arm64", suite=SUITE, packages=SYSROOT_PACKAGES, with_dependencies=True)
        packages = debian.unpack(debs, folder / "root")
        debian.relative_links(folder / "root")
        console.info(f"{NAME}: downloading Debian {QEMU_SUITE}'s {QEMU_PACKAGE} (QEMU 10, about 40 MB)")
        debs = debian.fetch(Path(apt) / "qemu", arch="amd64", suite=QEMU_SUITE, packages=(QEMU_PACKAGE,), with_dependencies=False)
        qemu_version = debian.unpack(debs, folder / "qemu")[QEMU_PACKAGE]
    for extra in (folder / "qemu").glob("usr/bin/qemu-*"):  # keep aarch64 only: 1/30 of the size
        if extra.name != "qemu-aarch64":
            extra.unlink()
    shutil.rmtree(folder / "qemu" / "usr" / "share", ignore_errors=True)
    device = EmulatedDevice(folder, {})
    console.info(f"{NAME}: checking {PYTHON} under QEMU")
    probe = _run(device, ["-c", "import platform; print(platform.machine(), platform.python_version())"])
    machine, version = probe.split()
    if machine != "aarch64":
        raise debian.DownloadFailed(f"{NAME}: the emulated Python reports machine {machine!r}, not aarch64")
    return {
        "device": NAME,
        "debian": SUITE,
        "python": version,
        "qemu": qemu_version,
        "packages": packages,
        "runtimes": {},
        "built_seconds": round(time.perf_counter() - t0, 1),
    }


def _run(device: EmulatedDevice, args: list[str], cpu: str = "cortex-a76", timeout: float = 300) -> str:
    argv = [*device.command(cpu), str(device.root / device.python.lstrip("/")), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env_for_device())
    if proc.returncode != 0:
        raise debian.DownloadFailed(f"{NAME}: {PYTHON} does not run under QEMU: {(proc.stderr.strip() or 'no output')[-300:]}")
    return proc.stdout.strip()


def _pip_install(site: Path, requirements: list[str], python: str) -> dict[str, str]:
    platforms = [x for p in PLATFORMS for x in ("--platform", f"{p}_aarch64")]
    major_minor = ".".join(python.split(".")[:2])
    argv = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts"]
    argv += ["--target", str(site), "--only-binary=:all:", *platforms, "--python-version", major_minor]
    argv += ["--implementation", "cp", *requirements]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.splitlines() if x.strip()] or [f"exit {proc.returncode}"]
        raise debian.DownloadFailed(f"pip could not install {' '.join(requirements)} for aarch64: {lines[-1].strip()[:300]}")
    versions = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        versions[name.lower().replace("_", "-")] = version
    return versions


def requirements(backend: str) -> list[str]:
    """The pip requirements of ``backend``'s runtime on the emulated device (pinned to the
    versions verified under QEMU), and numpy."""
    from .. import backends

    spec = backends.get(backend)
    pins = dict(spec.emulated_versions)
    return [f"{d}=={pins[d]}" if d in pins else d for d in spec.device_requires] + [NUMPY]


def _add_runtime(device: EmulatedDevice, backend: str) -> None:
    reqs = requirements(backend)
    console.info(f"{NAME}: installing aarch64 wheels of {' '.join(reqs)} for {backend}")
    with _staged(device.site(backend)) as stage:
        versions = _pip_install(stage, reqs, device.stamp["python"])
    device.stamp.setdefault("runtimes", {})[backend] = versions
    _write_json(device.folder / "stamp.json", device.stamp)


def ensure(runtimes: tuple[str, ...] = (), *, cache: Path | None = None) -> EmulatedDevice:
    """The emulated device, built if missing, with ``runtimes`` (backend names) installed."""
    devices = cache_root(cache)
    folder = devices / NAME
    with _locked(devices):
        stamp = _read_stamp(folder)
        if stamp is None:
            debian.check_host()
            if folder.exists():  # no stamp: not ours or left by an older version
                shutil.rmtree(folder)
            t0 = time.perf_counter()
            with _staged(folder) as stage:
                stamp = _build_base(stage)
                _write_json(stage / "stamp.json", stamp)
            console.info(f"{NAME}: built in {time.perf_counter() - t0:.0f} s at {folder}")
        device = EmulatedDevice(folder, stamp)
        for backend in runtimes:
            if backend not in stamp.get("runtimes", {}) or not device.site(backend).is_dir():
                _add_runtime(device, backend)
    return device


def _read_stamp(folder: Path) -> dict | None:
    try:
        stamp = json.loads((folder / "stamp.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("device") != NAME or not (folder / "root").is_dir():
        return None
    return stamp


def check_runtime(backend: str) -> None:
    """A one-line BadInput if ``backend`` has no runtime the emulated device can install."""
    from .. import backends

    if not backends.get(backend).device_requires:
        raise BadInput(f"backend {backend!r} names no runtime for devices (BackendSpec.device_requires)")
