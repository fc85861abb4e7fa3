"""How the host reaches a device: put files into a temporary folder there, run a command in it
with a timeout, get files back, and remove the folder at the end (unless ``keep``).

``LocalTransport`` is a folder on this host, with an optional command prefix: the emulated
device is ``qemu-aarch64 -cpu CPU -L ROOT`` before the device's Python. ``SshTransport`` is a
remote host through the system OpenSSH client, so ``~/.ssh/config`` (aliases, ProxyJump, keys,
the agent) applies as it does for ``ssh`` itself.

The command's ``TMPDIR`` is ``tmp/`` inside the folder, so what a runtime writes there goes with
it (ONNX Runtime writes a telemetry session file, ``$TMPDIR/.ses``, when it is imported).
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .. import console
from ..errors import BadInput, XceptionEdgeError


class DeviceFailed(XceptionEdgeError):
    """The device could not run what the host sent (a crash, a timeout): exit 1."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Completed:
    stdout: str
    stderr: str
    exit: int


class Transport(abc.ABC):
    """A temporary folder on a device; use as a context manager (the folder lives inside it)."""

    label = "device"

    def __init__(self, *, keep: bool = False):
        self.keep = keep
        self.workdir = ""

    def __enter__(self) -> Transport:
        self.workdir = self._mkdtemp()
        return self

    def __exit__(self, *exc) -> None:
        if not self.workdir:
            return
        if self.keep:
            console.info(f"kept the device's folder ({self.label}): {self.workdir}")
        else:
            self._remove()

    def path(self, name: str) -> str:
        """The device-side path of ``name`` in the temporary folder."""
        return f"{self.workdir}/{name}"

    @abc.abstractmethod
    def _mkdtemp(self) -> str: ...

    @abc.abstractmethod
    def _remove(self) -> None: ...

    @abc.abstractmethod
    def put(self, local: Path, name: str) -> str:
        """Copy a file or folder into the temporary folder as ``name``; its device-side path."""

    @abc.abstractmethod
    def run(self, argv: Sequence[str], *, timeout: float) -> Completed:
        """Run ``argv`` with the temporary folder as working directory."""

    @abc.abstractmethod
    def get(self, name: str, local: Path) -> bool:
        """Copy ``name`` from the temporary folder to ``local``; False if it is not there."""


class LocalTransport(Transport):
    """A temporary folder on this host; commands run with ``prefix`` and ``env``."""

    def __init__(self, *, prefix: Sequence[str] = (), env: dict | None = None, label: str = "local", keep: bool = False):
        super().__init__(keep=keep)
        self.prefix = list(prefix)
        self.env = env
        self.label = label

    def _mkdtemp(self) -> str:
        return tempfile.mkdtemp(prefix="xe-device-")

    def _remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def put(self, local: Path, name: str) -> str:
        dest = Path(self.path(name))
        try:
            if Path(local).is_dir():
                shutil.copytree(local, dest, symlinks=True)
            else:
                shutil.copy2(local, dest)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BadInput(f"{self.label}: the disk holding {self.workdir} is full; free space there") from None
            raise
        return str(dest)

    def run(self, argv: Sequence[str], *, timeout: float) -> Completed:
        """Run in the folder; on a timeout or Ctrl-C the process is killed and waited for (not
        left to the 0.25 s that ``subprocess.run`` gives it after a KeyboardInterrupt)."""
        scratch = Path(self.path("tmp"))  # the runtime's own temporary files go with the folder
        scratch.mkdir(exist_ok=True)
        env = {**(self.env if self.env is not None else os.environ), "TMPDIR": str(scratch)}
        try:
            proc = subprocess.Popen(
                [*self.prefix, *argv], cwd=self.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except FileNotFoundError as exc:
            raise BadInput(f"{self.label}: cannot run {exc.filename}: no such file") from None
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException as exc:
            proc.kill()
            proc.wait(timeout=30)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise DeviceFailed(f"{self.label}: no answer within {timeout:.0f} s; the run was stopped") from None
            raise
        return Completed(stdout, stderr, proc.returncode)

    def get(self, name: str, local: Path) -> bool:
        src = Path(self.path(name))
        if not src.is_file():
            return False
        shutil.copy2(src, local)
        return True


_SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15")


def _ssh_options() -> list[str]:
    """BatchMode (never prompt: a refused key fails at once), a connect timeout, and
    ``$XCEPTION_EDGE_SSH_CONFIG`` as ``-F`` when set (else ~/.ssh/config, as ssh itself)."""
    config = os.environ.get("XCEPTION_EDGE_SSH_CONFIG")
    return [*(["-F", config] if config else []), *_SSH_OPTIONS]


class SshTransport(Transport):
    """A temporary folder on ``[user@]host[:port]`` through the system ``ssh`` and ``scp``."""

    def __init__(self, host: str, *, user: str = "", port: int | None = None, label: str = "", keep: bool = False):
        super().__init__(keep=keep)
        self.dest = f"{user}@{host}" if user else host
        self.port = port
        self.label = label or f"ssh://{self.dest}"

    def _ssh(self, command: str, timeout: float) -> Completed:
        argv = ["ssh", *_ssh_options(), *(["-p", str(self.port)] if self.port else []), self.dest, command]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceFailed(f"{self.label}: no answer within {timeout:.0f} s; the run was stopped") from None
        except FileNotFoundError:
            raise BadInput("ssh devices need the OpenSSH client (`ssh`, `scp`) on this host") from None
        if proc.returncode == 255:  # ssh's own failure: unreachable host, refused key, unknown host key
            raise BadInput(f"{self.label}: {_last_line(proc.stderr) or 'ssh failed'}")
        return Completed(proc.stdout, proc.stderr, proc.returncode)

    def _scp(self, src: str, dst: str) -> Completed:
        argv = ["scp", "-q", "-r", *_ssh_options(), *(["-P", str(self.port)] if self.port else []), src, dst]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceFailed(f"{self.label}: copying {src} took over 600 s; stopped") from None
        except FileNotFoundError:
            raise BadInput("ssh devices need the OpenSSH client (`ssh`, `scp`) on this host") from None
        return Completed(proc.stdout, proc.stderr, proc.returncode)

    def _full(self, where: str) -> BadInput:
        return BadInput(
            f"{self.label}: the disk holding {where} is full; free space there (or set the device's TMPDIR elsewhere)"
        )

    def _mkdtemp(self) -> str:
        done = self._ssh('mktemp -d "${TMPDIR:-/tmp}/xe-device-XXXXXX"', 60)
        if done.exit != 0 or not done.stdout.strip().startswith("/"):
            if _FULL.search(done.stderr):
                raise self._full("its temporary folder ($TMPDIR, else /tmp)")
            raise DeviceFailed(f"{self.label}: cannot make a temporary folder: {_last_line(done.stderr)}")
        return done.stdout.strip()

    def _remove(self) -> None:
        self._ssh(f"rm -rf {shlex.quote(self.workdir)}", 120)

    def put(self, local: Path, name: str) -> str:
        done = self._scp(str(local), f"{self.dest}:{shlex.quote(self.path(name))}")
        if done.exit != 0:
            # scp over SFTP (OpenSSH >= 9) reports a full disk as a bare "Failure": ask the device
            if _FULL.search(done.stderr) or self._free_kib() < _size_kib(Path(local)):
                raise self._full(self.workdir.rpartition("/")[0] or "/")
            raise DeviceFailed(f"{self.label}: copying {local} failed: {_last_line(done.stderr) or done.exit}")
        return self.path(name)

    def _free_kib(self) -> float:
        """The free space (KiB) of the disk holding the folder, as ``df -Pk`` says; inf if unknown."""
        done = self._ssh(f"df -Pk {shlex.quote(self.workdir)} | tail -n 1", 60)
        fields = done.stdout.split()
        return float(fields[3]) if done.exit == 0 and len(fields) >= 4 and fields[3].isdigit() else float("inf")

    def run(self, argv: Sequence[str], *, timeout: float) -> Completed:
        """Run in the folder; on a timeout, Ctrl-C or ssh failure the remote process is stopped
        too (ssh without a terminal does not pass the signal on, and would leave it running)."""
        here = shlex.quote(self.workdir)
        try:
            return self._ssh(f"cd {here} && mkdir -p tmp && echo $$ > .pid && TMPDIR={here}/tmp exec {shlex.join(argv)}", timeout)
        except BaseException:
            self._stop()
            raise

    def _stop(self) -> None:
        """SIGTERM the runner (the shell that wrote .pid became it by ``exec``), wait up to 5 s
        for it to end, then SIGKILL; best effort, it must not hide the error that brought us here."""
        pid = f"$(cat {shlex.quote(self.path('.pid'))} 2>/dev/null)"
        script = (
            f'p={pid}; [ -n "$p" ] || exit 0; kill "$p" 2>/dev/null; i=0; '
            'while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; kill -9 "$p" 2>/dev/null; true'
        )
        try:
            self._ssh(script, 30)
        except XceptionEdgeError:
            pass

    def get(self, name: str, local: Path) -> bool:
        done = self._scp(f"{self.dest}:{shlex.quote(self.path(name))}", str(local))
        return done.exit == 0 and Path(local).is_file()


_FULL = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)


def _size_kib(path: Path) -> float:
    """What copying ``path`` (a file or a folder) needs, in KiB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1024


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


def env_for_device(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This host's environment without its Python settings, for a local device's Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "VIRTUAL_ENV"))}
    env.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1", **(extra or {}))
    return env
