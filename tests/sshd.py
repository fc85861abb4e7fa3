"""A real OpenSSH server on 127.0.0.1 for the ssh device tests (the project's rule: a remote device
in a test is a real ``sshd``, no stand-in). Import the fixture in a test module:
``from sshd import sshd_device  # noqa: F401``.

The server runs as the current user (root or not) on a free port with its own host key, accepts
one generated user key, and gives every session ``TMPDIR=<its folder>/device-tmp``: the device's
temporary folders land there, so a test sees exactly what it (and nothing else on the machine)
left. A client config names it ``Host xe-test-device``; tests point ``XCEPTION_EDGE_SSH_CONFIG``
at that file, as a user's ~/.ssh/config would hold the alias.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
ALIAS = "xe-test-device"
MISSING = "the ssh device tests need OpenSSH: apt-get install openssh-server openssh-client (.ci/system-deps does it as root)"


@dataclasses.dataclass(frozen=True)
class Sshd:
    """A running sshd and the client side of it."""

    folder: Path  # keys, configs, the log
    port: int
    user: str
    config: Path  # the client config (-F): the alias, the key, the known host
    tmpdir: Path  # the sessions' $TMPDIR
    log: Path  # sshd's own log (-e)

    @property
    def url(self) -> str:
        """The device by address, no alias: ssh://USER@127.0.0.1:PORT."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}"


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    """A new ed25519 key pair at ``path`` (and ``path``.pub), no passphrase."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xe-test", "-f", str(path)], check=True)
    return path


def client_config(folder: Path, port: int, user: str, key: Path, name: str = "ssh_config") -> Path:
    """An ssh client config: the alias for the server, and (for every host) only ``key``, the
    server's host key as the one known host, strict checking and no password prompt."""
    path = folder / name
    path.write_text(
        f"Host {ALIAS}\n"
        f"    HostName 127.0.0.1\n    Port {port}\n    User {user}\n"
        "Host *\n"
        f"    IdentityFile {key}\n    IdentitiesOnly yes\n    IdentityAgent none\n"
        f"    UserKnownHostsFile {folder / 'known_hosts'}\n    GlobalKnownHostsFile /dev/null\n"
        "    StrictHostKeyChecking yes\n    PasswordAuthentication no\n    LogLevel ERROR\n"
    )
    return path


def _server_config(folder: Path, port: int, tmpdir: Path, name: str) -> Path:
    path = folder / f"{name}.conf"
    path.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / name}.pid\n"
        "StrictModes no\nUsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\nLogLevel VERBOSE\nPrintMotd no\nX11Forwarding no\n"
        f"SetEnv TMPDIR={tmpdir}\n"
    )
    return path


def _wait_listening(proc: subprocess.Popen, port: int, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout:.0f} s:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def running_sshd(folder: Path, tmpdir: Path, name: str = "sshd") -> Iterator[int]:
    """``sshd -D -e`` on a free port of 127.0.0.1 with ``folder``'s keys and sessions'
    ``TMPDIR=tmpdir``, until the block ends (terminate, wait, kill); yields the port."""
    if os.geteuid() == 0:  # privilege separation's empty chroot folder
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    config = _server_config(folder, port, tmpdir, name)
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        _wait_listening(proc, port, log)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def require_openssh() -> None:
    if not os.access(SSHD, os.X_OK) or not all(shutil.which(x) for x in ("ssh", "scp", "ssh-keygen")):
        pytest.skip(MISSING)


def make_keys(folder: Path) -> Path:
    """The host key and the one authorised user key in ``folder``; returns the user key."""
    keygen(folder / "host_key")
    user_key = keygen(folder / "user_key")
    (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
    return user_key


def know_host(folder: Path, port: int) -> None:
    """Add the server's host key, for [127.0.0.1]:port, to the client's known_hosts."""
    pub = (folder / "host_key.pub").read_text().split()
    with (folder / "known_hosts").open("a") as f:
        f.write(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")


@pytest.fixture(scope="module")
def sshd_device(tmp_path_factory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 for the module's tests (see the module's docstring)."""
    require_openssh()
    folder = tmp_path_factory.mktemp("sshd")
    user_key = make_keys(folder)
    tmpdir = folder / "device-tmp"
    tmpdir.mkdir()
    with running_sshd(folder, tmpdir) as port:
        know_host(folder, port)
        user = getpass.getuser()
        yield Sshd(folder, port, user, client_config(folder, port, user, user_key), tmpdir, folder / "sshd.log")
