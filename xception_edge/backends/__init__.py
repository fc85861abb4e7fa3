"""The one registry of backends. Each backend is a package ``backends/<name>/`` whose
``__init__.py`` declares a :class:`BackendSpec` (stdlib only: importing it loads no framework)
and holds ``convert.py``, ``runtime.py``, ``inspect.py`` and, optionally, ``accuracy.py`` (the
backend's own accuracy control). Every other module asks this registry; none names a backend.

Adding a backend: write its package and add its name to ``PACKAGES``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable

from ..errors import BadInput

PACKAGES = ("litert", "openvino", "onnxruntime")


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """What the rest of the toolkit needs to know about a backend, without importing it."""

    name: str
    formats: tuple[str, ...]  # artifact formats it writes (profile `format`)
    precisions: tuple[str, ...]  # precisions its converter supports
    extra: str  # the pip extra that brings its runtime: pip install 'xception-edge[EXTRA]'
    tools: tuple[str, ...]  # distributions whose versions a manifest records
    colour: str = "#7f7f7f"  # its colour in report plots
    float_io_only: bool = False  # its int8 artifacts keep float32 input and output
    accuracy_control: bool = False  # has accuracy.py: its own accuracy-aware quantization for --max-drop
    native_bench: bool = False  # has native_bench.py: the vendor's own benchmark tool (bench/run_matrix.py)
    check_profile: Callable | None = None  # (profile, path) -> None: backend-specific profile rules
    settings: tuple[str, ...] = ()  # [quantization] keys only it reads: other backends' profiles must leave them unset
    # `sweep`'s method axis: the [quantization] key that picks how its calibration turns activation
    # statistics into ranges, and the values it takes; no key with one value: a fixed method, named for the record.
    calibration_setting: str = ""
    calibration_methods: tuple[str, ...] = ()
    convert_requires: tuple[tuple[str, str], ...] = ()  # (module, pip extra bringing it) its converter imports
    quantize_requires: tuple[tuple[str, str], ...] = ()  # the same, for calibrated int8 only
    native_scope: str = ""  # regex: ignored_scope entries that may name an op/tensor of its converted model
    native_names: str = ""  # what those are, for error messages ("TFLite tensor names")
    scope_kinds: tuple[str, ...] = ()  # Keras layer classes it can keep in float (empty: any layer)
    device_requires: tuple[str, ...] = ()  # pip distributions its runtime needs on a device, besides numpy
    # The versions of those measured to compute correctly on the emulated arm64 device (QEMU 10,
    # cortex-a76), pinned there: {distribution: version}. Unpinned distributions take the newest.
    emulated_versions: tuple[tuple[str, str], ...] = ()
    package: str = ""  # the import path of its package (filled by the registry)

    def missing(self, precision) -> tuple[str, str] | None:
        """(module, pip extra) of the first module converting to ``precision`` needs that is not
        installed (looked up with importlib.util.find_spec: nothing is imported), or None."""
        needs = self.convert_requires + (self.quantize_requires if precision.needs_calibration else ())
        for module, extra in needs:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return module, extra
        return None

    def _module(self, part: str):
        return importlib.import_module(f"{self.package}.{part}")

    def converter(self) -> Callable:
        """``convert(source, profile, calibration, stage, exports, **options) -> ConvertedModel``
        (``exports``: the run's ``exports.Exports``)."""
        return self._module("convert").convert

    def runtime_class(self) -> type:
        """The Runtime subclass that opens this backend's artifacts."""
        return self._module("runtime").RUNTIME

    def inspector(self):
        """The module with ``measure(ctx) -> list[LayerError]``."""
        return self._module("inspect")

    def accuracy(self):
        """The module with ``try_accuracy_control(...)``, or None."""
        return self._module("accuracy") if self.accuracy_control else None

    def native_benchmark(self):
        """The module with ``latency(model, manifest, *, runs, threads, bin_dir) -> (tool, ms) | None``
        (the vendor's own benchmark tool, run as a subprocess), or None."""
        return self._module("native_bench") if self.native_bench else None


def _spec_of(package: str) -> BackendSpec:
    spec = importlib.import_module(package).SPEC
    if not isinstance(spec, BackendSpec):
        raise TypeError(f"{package}.SPEC is not a BackendSpec")
    return dataclasses.replace(spec, package=package)


_REGISTRY: dict[str, BackendSpec] = {}


def registry() -> dict[str, BackendSpec]:
    """Every backend, by name (loaded on first use: light, no framework is imported)."""
    if not _REGISTRY:
        for name in PACKAGES:
            spec = _spec_of(f"{__name__}.{name}")
            _REGISTRY[spec.name] = spec
    return _REGISTRY


def register(package: str) -> BackendSpec:
    """Add a backend that lives outside this package (a plugin, or a test's backend) by the
    import path of its package; returns its spec. ``unregister`` removes it again."""
    spec = _spec_of(package)
    if spec.name in registry():
        raise ValueError(f"a backend named {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    if name in PACKAGES:
        raise ValueError(f"{name!r} is a built-in backend")
    registry().pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(registry())


def get(name: str, where: str = "") -> BackendSpec:
    """The backend called ``name``; a one-line BadInput naming the known ones otherwise."""
    spec = registry().get(name) if isinstance(name, str) else None
    if spec is None:
        prefix = f"{where}: " if where else ""
        raise BadInput(f"{prefix}backend {name!r} is not one of: {', '.join(names())}")
    return spec
