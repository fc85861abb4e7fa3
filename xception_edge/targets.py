"""Target profiles: one TOML file per target, loaded into frozen dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from pathlib import Path

from .errors import BadInput
from .profiles import DType, GateSpec, Precision, QuantSpec, TargetProfile, VerifySpec

_SECTIONS = {"quantization": QuantSpec, "verify": VerifySpec, "gates": GateSpec}
_ENUMS = {"precision": Precision, "input_dtype": DType, "output_dtype": DType}
# A profile's name is its folder under --out: a plain name, never a path.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_INT_MAX = 2**31 - 1  # what every backend's C API takes


def builtin_dir() -> Path:
    """targets/ folder: inside the installed package, or at the repo root in a checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_targets", here.parent / "targets"):
        if cand.is_dir():
            return cand
    raise BadInput(f"built-in target profiles not found beside {here}; reinstall xception-edge")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def _check_keys(table: dict, cls, where: str, path: Path) -> None:
    known = {f.name for f in dataclasses.fields(cls)} - {"source"}
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(sorted(known))}"
            raise BadInput(f"{path}: unknown key '{key}' in {where}{hint}")


def _section(table: dict, cls, where: str, path: Path):
    if not isinstance(table, dict):
        raise BadInput(f"{path}: [{where}] must be a table")
    _check_keys(table, cls, f"[{where}]", path)
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        hint = str(hints[key])
        if "tuple" in hint:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadInput(f"{path}: [{where}] {key} must be a list of strings, got {value!r}")
            value = tuple(value)
        elif "bool" in hint:
            if not isinstance(value, bool):
                raise BadInput(f"{path}: [{where}] {key} must be true or false, got {value!r}")
        elif "float" in hint or "int" in hint:
            value = _number(value, hint.startswith("int"), f"[{where}] {key}", path)
        elif "dict" in hint:
            value = _tables(value, f"[{where}] {key}", path)
        elif "str" in hint and not isinstance(value, str):
            raise BadInput(f"{path}: [{where}] {key} must be a string, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _tables(value, what: str, path: Path) -> dict:
    """A table of tables (``[quantization.transform_options.adaround]``); their contents are
    checked against the profile (``_check_consistent``)."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise BadInput(f"{path}: {what} must be a table of tables, e.g. [quantization.transform_options.adaround]")
    return {str(k): dict(v) for k, v in value.items()}


def _number(value, integer: bool, what: str, path: Path):
    """A finite, non-negative number (a whole one when ``integer``); booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "a whole number" if integer else "a number"
        raise BadInput(f"{path}: {what} must be {kind}, got {value!r}")
    if not integer:
        try:
            value = float(value)
        except OverflowError:
            raise BadInput(f"{path}: {what} = {value} is too large") from None
        if not math.isfinite(value):
            raise BadInput(f"{path}: {what} must be a finite number, got {value!r}")
    if value < 0:
        raise BadInput(f"{path}: {what} must not be negative, got {value!r}")
    if integer and value > _INT_MAX:
        raise BadInput(f"{path}: {what} = {value} is too large (at most {_INT_MAX})")
    return value


def _check_name(name: str, path: Path) -> None:
    if not _NAME.fullmatch(name):
        raise BadInput(
            f"{path}: name = {name!r} is not a plain name; use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it names the artifact's folder under --out)"
        )


def load_profile(path: str | Path) -> TargetProfile:
    """Parse and validate one target TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"target file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"target file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"target file {path} is not valid TOML: {exc}") from None
    return _from_data(data, path, str(path))


def profile_from_dict(data: dict, where: str | Path) -> TargetProfile:
    """The profile an artifact was converted with, from its manifest's ``profile`` record."""
    if not isinstance(data, dict):
        raise BadInput(f"{where}: the profile record must be a table, got {type(data).__name__}")
    source = str(data.get("source") or where)
    data = {
        k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
        for k, v in data.items()
        if k != "source" and v is not None
    }
    return _from_data(data, Path(where), source)


def _from_data(data: dict, path: Path, source: str) -> TargetProfile:
    _check_keys(data, TargetProfile, "the top level", path)
    kwargs: dict = {"source": source}
    for key, value in data.items():
        if key in _SECTIONS:
            kwargs[key] = _section(value, _SECTIONS[key], key, path)
        elif key in _ENUMS:
            enum_cls = _ENUMS[key]
            try:
                kwargs[key] = enum_cls(value)
            except ValueError:
                allowed = ", ".join(e.value for e in enum_cls)
                raise BadInput(f"{path}: {key} = {value!r} is not one of: {allowed}") from None
        elif key in ("per_channel",):
            if not isinstance(value, bool):
                raise BadInput(f"{path}: {key} must be true or false, got {value!r}")
            kwargs[key] = value
        elif key in ("calibration_size", "threads"):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _INT_MAX:
                raise BadInput(f"{path}: {key} must be a positive integer (at most {_INT_MAX}), got {value!r}")
            kwargs[key] = value
        else:
            if not isinstance(value, str):
                raise BadInput(f"{path}: {key} must be a string, got {value!r}")
            kwargs[key] = value
    for required in ("name", "backend", "format", "precision"):
        if required not in kwargs:
            raise BadInput(f"{path}: missing required key '{required}'")
    _check_name(kwargs["name"], path)
    kwargs.setdefault("description", "")
    profile = TargetProfile(**kwargs)
    _check_consistent(profile, path)
    return profile


def _check_consistent(p: TargetProfile, path: Path) -> None:
    from . import backends

    spec = backends.get(p.backend, str(path))
    if p.format not in spec.formats:
        raise BadInput(f"{path}: backend {p.backend} writes format {', '.join(spec.formats)}, not {p.format}")
    if p.precision.value not in spec.precisions:
        quoted = [f'"{x}"' for x in spec.precisions]
        allowed = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
        raise BadInput(f"{path}: {p.backend} targets support precision {allowed}, not {p.precision.value}")
    if spec.check_profile is not None:
        spec.check_profile(p, path)
    if p.precision is not Precision.INT8 and (p.input_dtype is not DType.FLOAT32 or p.output_dtype is not DType.FLOAT32):
        raise BadInput(f'{path}: input/output dtype other than float32 needs precision = "int8"')
    if not 0.0 <= p.verify.min_agreement <= 1.0:
        raise BadInput(f"{path}: [verify] min_agreement must be within 0..1, got {p.verify.min_agreement}")
    if p.verify.num_images < 1:
        raise BadInput(f"{path}: [verify] num_images must be at least 1")
    q = p.quantization
    for key, value, allowed in (
        ("activation_dtype", q.activation_dtype, ("int8", "uint8")),
        ("weight_dtype", q.weight_dtype, ("int8", "uint8")),
        ("calibration_method", q.calibration_method, ("minmax", "entropy", "percentile")),
        ("preset", q.preset, ("performance", "mixed")),
        ("overflow_fix", q.overflow_fix, ("enable", "first_layer", "disable")),
        ("activations_range", q.activations_range, ("minmax", "mean_minmax", "histogram")),
    ):
        if value not in allowed:
            raise BadInput(f"{path}: [quantization] {key} = {value!r} is not one of: {', '.join(allowed)}")
    _check_backend_settings(q, spec, path)
    _check_percentile(q, path)
    from .transforms import check_options

    for name, options in q.transform_options.items():
        if name not in q.transforms:
            raise BadInput(
                f"{path}: [quantization.transform_options.{name}] is for a transform not in transforms = "
                f"{list(q.transforms)}; add it there or remove the table"
            )
        check_options(name, options, f"{path}: [quantization.transform_options.{name}]")
    if not 0.0 <= q.max_float_mac_share <= 1.0:
        raise BadInput(f"{path}: [quantization] max_float_mac_share must be within 0..1, got {q.max_float_mac_share!r}")
    if q.subset_size is not None and (not isinstance(q.subset_size, int) or q.subset_size < 1):
        raise BadInput(
            f"{path}: [quantization] subset_size must be a positive integer (or left out for all images), got {q.subset_size!r}"
        )
    from .gates import check_limits  # the one validator of gate limits (finite; ratios and agreements within 0..1)

    check_limits(dataclasses.asdict(p.gates), f"{path}: [gates]")


def _check_percentile(q: QuantSpec, path: Path) -> None:
    p = q.calibration_percentile
    if not 0.0 < p <= 100.0:
        raise BadInput(f"{path}: [quantization] calibration_percentile must be within (0, 100], got {p!r}")
    if q.calibration_method != "percentile" and p != QuantSpec().calibration_percentile:
        raise BadInput(
            f'{path}: [quantization] calibration_percentile is for calibration_method = "percentile", not '
            f"{q.calibration_method!r}; remove it or set the method"
        )


def _check_backend_settings(q: QuantSpec, spec, path: Path) -> None:
    """A [quantization] key that some backends own (their specs' ``settings``) keeps its default
    in the profiles of every other backend."""
    from . import backends

    default = QuantSpec()
    for key in dict.fromkeys(k for other in backends.registry().values() for k in other.settings):
        if key not in spec.settings and getattr(q, key) != getattr(default, key):
            owners = " or ".join(other.name for other in backends.registry().values() if key in other.settings)
            article = "an" if owners[0] in "aeiou" else "a"
            raise BadInput(f"{path}: [quantization] {key} is {article} {owners} setting; remove it for backend {spec.name}")


def resolve_target(spec: str) -> TargetProfile:
    """A built-in target name, or a path to a TOML file (``./my.toml``)."""
    if spec.endswith(".toml") or "/" in spec or "\\" in spec:
        return load_profile(spec)
    names = builtin_names()
    if spec not in names:
        close = difflib.get_close_matches(spec, names, n=3, cutoff=0.4)
        hint = f"did you mean: {', '.join(close)}?" if close else f"built-in targets: {', '.join(names)}"
        raise BadInput(f"unknown target '{spec}'; {hint} (or pass a path to a .toml profile)")
    profile = load_profile(builtin_dir() / f"{spec}.toml")
    if profile.name != spec:
        raise BadInput(f"{profile.source}: name = {profile.name!r} must match the file name {spec!r}")
    return profile


def resolve_targets(specs: tuple[str, ...] | list[str]) -> list[TargetProfile]:
    """Expand ``all`` and drop repeats of the same profile, keeping order. Two different
    profiles with one name (they would write the same ``OUT/<name>/``) are an error."""
    out: dict[str, TargetProfile] = {}
    for spec in specs:
        profiles = [resolve_target(n) for n in builtin_names()] if spec == "all" else [resolve_target(spec)]
        for p in profiles:
            first = out.setdefault(p.name, p)
            if dataclasses.replace(first, source="") != dataclasses.replace(p, source=""):
                raise BadInput(
                    f"two different target profiles are named '{p.name}': {first.source} and {p.source}; "
                    "rename one (the name is the artifact's folder under --out)"
                )
    if not out:
        raise BadInput("no target given; use --target NAME (see `xception-edge targets list`)")
    return list(out.values())
