"""How the host reaches a device: put files into a temporary folder there, run a command in it
with a timeout, get files back, and remove the folder at the end (unless ``keep``).

``LocalTransport`` is a folder on this host, with an optional command prefix: the emulated
device is ``qemu-aarch64 -cpu CPU -L ROOT`` before the device's Python. ``SshTransport`` is a
remote host through the system OpenSSH client, so ``~/.ssh/config`` (aliases, ProxyJump, keys,
the agent) applies as it does for ``ssh`` itself.
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import os
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
        try:
            proc = subprocess.run(
                [*self.prefix, *argv], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise DeviceFailed(f"{self.label}: no answer within {timeout:.0f} s; the run was stopped") from None
        except FileNotFoundError as exc:
            raise BadInput(f"{self.label}: cannot run {exc.filename}: no such file") from None
        return Completed(proc.stdout, proc.stderr, proc.returncode)

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

    def _scp(self, src: str, dst: str) -> None:
        argv = ["scp", "-q", "-r", *_ssh_options(), *(["-P", str(self.port)] if self.port else []), src, dst]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise DeviceFailed(f"{self.label}: copying {src} failed: {_last_line(proc.stderr) or proc.returncode}")

    def _mkdtemp(self) -> str:
        done = self._ssh("mktemp -d /tmp/xe-device-XXXXXX", 60)
        if done.exit != 0 or not done.stdout.strip().startswith("/"):
            raise DeviceFailed(f"{self.label}: cannot make a temporary folder: {_last_line(done.stderr)}")
        return done.stdout.strip()

    def _remove(self) -> None:
        self._ssh(f"rm -rf {shlex.quote(self.workdir)}", 120)

    def put(self, local: Path, name: str) -> str:
        self._scp(str(local), f"{self.dest}:{shlex.quote(self.path(name))}")
        return self.path(name)

    def run(self, argv: Sequence[str], *, timeout: float) -> Completed:
        """Run in the folder; on a timeout or Ctrl-C the remote process is stopped too (ssh
        without a terminal would leave it running)."""
        here = shlex.quote(self.workdir)
        try:
            return self._ssh(f"cd {here} && echo $$ > .pid && exec {shlex.join(argv)}", timeout)
        except (KeyboardInterrupt, DeviceFailed):
            self._ssh(f"kill $(cat {here}/.pid) 2>/dev/null; true", 30)
            raise

    def get(self, name: str, local: Path) -> bool:
        try:
            self._scp(f"{self.dest}:{shlex.quote(self.path(name))}", str(local))
        except DeviceFailed:
            return False
        return Path(local).is_file()


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


def env_for_device(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This host's environment without its Python settings, for a local device's Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "VIRTUAL_ENV"))}
    env.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1", **(extra or {}))
    return env
