"""The device-side code as one zipapp (``python runner.pyz request.json``): ``devices/runner.py``
and exactly the toolkit modules it imports for one backend, nothing that needs click, rich,
Pillow, TensorFlow or another backend's runtime. Built with the stdlib ``zipfile``, in memory
of this checkout: the device runs the same code as the host."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # xception_edge/
# The modules the runner imports (directly or through them), relative to the package.
COMMON = (
    "__init__.py",
    "errors.py",
    "hashing.py",
    "artifact.py",
    "console.py",
    "interrupts.py",
    "latency.py",
    "hostinfo.py",
    "frameworks.py",
    "records/__init__.py",
    "records/base.py",
    "records/budget.py",
    "records/manifest.py",
    "records/preprocessing.py",
    "records/report.py",
    "records/verification.py",
    "runtime/__init__.py",
    "runtime/base.py",
    "backends/__init__.py",
    "devices/__init__.py",
    "devices/runner.py",
)
# Modules of a backend's package that only the build host uses (they import the converters).
HOST_ONLY = ("convert.py", "inspect.py", "accuracy.py", "native_bench.py", "selective.py", "ops.py")
MAIN = """\
import sys
if sys.version_info < (3, 9):
    sys.stdout.write("XE-ERROR python %d.%d.%d\\n" % tuple(sys.version_info[:3]))
    sys.exit(2)
from xception_edge.devices.runner import main
sys.exit(main(sys.argv[1:]))
"""


def _backend_files(package: str) -> list[tuple[Path, str]]:
    """(file, name in the zip) of a backend package's device-side modules."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"backend package {package} cannot be found")
    folder = Path(list(found.submodule_search_locations)[0])
    prefix = package.replace(".", "/")
    return [(p, f"{prefix}/{p.name}") for p in sorted(folder.glob("*.py")) if p.name not in HOST_ONLY]


def _declaration(package: str) -> tuple[Path, str]:
    """A backend package's ``__init__.py`` (its BackendSpec: stdlib only); the registry loads all."""
    found = importlib.util.find_spec(package)
    if found is None or not found.origin:
        raise ValueError(f"backend package {package} cannot be found")
    return Path(found.origin), f"{package.replace('.', '/')}/__init__.py"


def members(backend: str) -> list[tuple[Path, str]]:
    """(file, name in the zip) of every module the runner needs for ``backend``: the common
    modules, every backend's declaration, and ``backend``'s device-side modules."""
    from .. import backends

    spec = backends.get(backend)
    files = [(PACKAGE / rel, f"xception_edge/{rel}") for rel in COMMON]
    files += [_declaration(s.package) for s in backends.registry().values() if s.name != spec.name]
    return files + _backend_files(spec.package)


def build(backend: str, dest: Path) -> Path:
    """Write the zipapp for ``backend``'s artifacts to ``dest``."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("__main__.py", MAIN)
        for path, name in members(backend):
            zf.write(path, name)
    return dest
