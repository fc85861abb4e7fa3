"""Debian packages fetched with a private apt configuration in a folder: no root, no
``dpkg --add-architecture``, nothing outside the folder changes. apt checks each archive's
Release signature with the host's debian-archive-keyring."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import BadInput, XceptionEdgeError

MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class DownloadFailed(XceptionEdgeError):
    """apt-get, dpkg or pip failed while building a device (exit 1): the network or a mirror."""

    exit_code = 1


def check_host() -> None:
    """apt-get, dpkg-deb and the Debian archive keyring are here; a one-line BadInput otherwise."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BadInput(f"emulated devices are built with {tool}, which this host lacks; use a Debian or Ubuntu host")
    if not KEYRING.is_file():
        raise BadInput(f"{KEYRING} is missing: install Debian's archive keys with: sudo apt-get install debian-archive-keyring")


def _options(folder: Path, arch: str, suite: str) -> list[str]:
    etc = folder / "etc"
    for sub in ("lists/partial", "cache/archives/partial", "etc/preferences.d", "etc/apt.conf.d"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "status").touch()
    (etc / "sources.list").write_text(f"deb [arch={arch} signed-by={KEYRING}] {MIRROR} {suite} main\n")
    opts = {
        "Dir::Etc": etc,
        "Dir::Etc::sourcelist": etc / "sources.list",
        "Dir::Etc::sourceparts": etc / "sources.list.d",
        "Dir::State": folder,
        "Dir::State::lists": folder / "lists",
        "Dir::State::status": folder / "status",
        "Dir::Cache": folder / "cache",
        "APT::Architecture": arch,
        "APT::Architectures::": arch,
        "Debug::NoLocking": 1,
    }
    if os.geteuid() == 0:  # root: apt would drop to the _apt user, who cannot write the folder
        opts["APT::Sandbox::User"] = "root"
    return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]


def _apt(args: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(["apt-get", "-q", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [x.strip() for x in (proc.stderr + proc.stdout).splitlines() if x.strip().startswith(("E:", "W:", "Err"))]
        raise DownloadFailed(f"apt-get could not {what}: {(lines or [f'exit {proc.returncode}'])[0][:300]}")


def fetch(folder: Path, *, arch: str, suite: str, packages: tuple[str, ...], with_dependencies: bool) -> list[Path]:
    """Download ``packages`` of Debian ``suite`` for ``arch`` (and, ``with_dependencies``, all they
    depend on, as for an empty system) into ``folder``; returns the .deb files."""
    opts = _options(folder, arch, suite)
    _apt([*opts, "update"], f"read Debian {suite} ({arch}) from {MIRROR}")
    archives = folder / "cache" / "archives"
    if with_dependencies:
        _apt([*opts, "-y", "-d", "--no-install-recommends", "install", *packages], f"download {' '.join(packages)}")
    else:
        _apt([*opts, "download", *packages], f"download {' '.join(packages)}", cwd=archives)
    return sorted(archives.glob("*.deb"))


def unpack(debs: list[Path], root: Path) -> dict[str, str]:
    """``dpkg-deb -x`` each .deb into ``root``; returns {package: version}."""
    versions = {}
    for deb in debs:
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise DownloadFailed(f"dpkg-deb could not unpack {deb.name}: {proc.stderr.strip()[:200]}")
        name, version = deb.name.split("_")[:2]
        versions[name] = version.replace("%3a", ":")
    return versions


def relative_links(root: Path) -> None:
    """Point every absolute symlink under ``root`` inside ``root`` (the host's own files would
    answer them otherwise: /etc/python3.11/sitecustomize.py, the loader's links)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            link = Path(dirpath) / name
            if link.is_symlink():
                target = os.readlink(link)
                if target.startswith("/"):
                    link.unlink()
                    link.symlink_to(os.path.relpath(root / target.lstrip("/"), link.parent))
