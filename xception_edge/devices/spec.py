"""``--device SPEC``: ``local``, ``ssh://[user@]host[:port]`` or ``emulated:arm64[:CPU]``."""

from __future__ import annotations

import dataclasses
import re

from ..errors import BadInput

FORMS = "local, ssh://[user@]host[:port], emulated:arm64[:CPU] (CPU: a QEMU model such as cortex-a76)"
DEFAULT_CPU = "cortex-a76"  # Raspberry Pi 5; cortex-a72 is a Raspberry Pi 4, cortex-a53 a Pi 3 / Zero 2
# QEMU 10's aarch64 CPU models with the ARMv8 int8 paths the runtimes use (`qemu-aarch64 -cpu help`)
CPUS = (
    "cortex-a35",
    "cortex-a53",
    "cortex-a55",
    "cortex-a57",
    "cortex-a72",
    "cortex-a76",
    "cortex-a710",
    "neoverse-n1",
    "neoverse-n2",
    "neoverse-v1",
    "a64fx",
    "max",
)
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$|^\[[0-9A-Fa-f:.]+\]$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """A parsed ``--device`` value."""

    kind: str  # "local", "ssh" or "emulated"
    text: str  # the value as given
    host: str = ""  # ssh: the host name or ~/.ssh/config alias
    user: str = ""  # ssh: the login, empty for ssh's own default
    port: int | None = None  # ssh: None for ssh's own default
    arch: str = ""  # emulated: "arm64"
    cpu: str = ""  # emulated: the QEMU CPU model

    @property
    def emulated(self) -> bool:
        return self.kind == "emulated"

    @property
    def label(self) -> str:
        """The canonical spelling (the default CPU made explicit)."""
        if self.kind == "emulated":
            return f"emulated:{self.arch}:{self.cpu}"
        return self.text


def _bad(value: str, why: str) -> BadInput:
    return BadInput(f"--device {value!r}: {why}; use one of: {FORMS}")


def _ssh(value: str) -> DeviceSpec:
    rest = value[len("ssh://") :].rstrip("/")
    user, _, hostport = rest.rpartition("@")
    host, port = hostport, None
    m = (
        re.match(r"^(.*?)(?::(\d+))?$", hostport)
        if not hostport.startswith("[")
        else re.match(r"^(\[.*\])(?::(\d+))?$", hostport)
    )
    if m:
        host, port = m.group(1), int(m.group(2)) if m.group(2) else None
    if not host or not _HOST.match(host):
        raise _bad(value, f"{host or 'the host'!r} is not a host name")
    if user and not _USER.match(user):
        raise _bad(value, f"{user!r} is not a user name")
    if port is not None and not 0 < port < 65536:
        raise _bad(value, f"port {port} is not between 1 and 65535")
    return DeviceSpec("ssh", value, host=host.strip("[]"), user=user, port=port)


def _emulated(value: str) -> DeviceSpec:
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[1] != "arm64":
        raise _bad(value, "the emulated architecture is arm64")
    cpu = parts[2] if len(parts) == 3 else DEFAULT_CPU
    if cpu not in CPUS:
        raise _bad(value, f"{cpu!r} is not a QEMU aarch64 CPU model ({', '.join(CPUS)})")
    return DeviceSpec("emulated", value, arch="arm64", cpu=cpu)


def parse(value: str | None) -> DeviceSpec:
    """The device ``value`` names; a one-line BadInput naming the value and the accepted forms."""
    if value is None or value == "local":
        return DeviceSpec("local", "local")
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise _bad(str(value), "not a device")
    if value.startswith("ssh://"):
        return _ssh(value)
    if value.startswith("emulated:") or value == "emulated":
        return _emulated(value)
    raise _bad(value, "not a device")
