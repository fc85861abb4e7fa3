"""A sweep's grid: its axes (calibration ``size``, ``seed``, calibration ``method``, ``transforms``),
read from a TOML or JSON file or from inline ``KEY=V1,V2`` options, every value checked against the
target before any work starts; and its cells, one conversion and one evaluation each.

    size = [100, 300]                    # calibration images (default: the profile's calibration_size)
    seed = [0, 1, 2]                     # seeds of the calibration sample (default: 0)
    method = ["minmax", "entropy"]       # the backend's calibration methods (default: the profile's)
    transforms = [[], ["cle"]]           # transform lists (default: the profile's own)

Inline, the same grid is ``--grid size=100,300 --grid seed=0,1,2 --grid method=minmax,entropy
--grid transforms=none,cle`` (a transform list joined by ``+``: ``cle+bias_correction``)."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import BadInput
from ..profiles import TargetProfile

AXES = ("size", "seed", "method", "transforms")
_INT_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Cell:
    """One conversion of the target: its calibration size, seed, method and transforms."""

    size: int
    seed: int
    method: str | None  # None: the backend has no calibration method to name
    transforms: tuple[str, ...]

    @property
    def name(self) -> str:
        """Its folder under OUT/cells/: ``size16-seed1-minmax-cle`` (a transform list joined by '.')."""
        return f"size{self.size}-seed{self.seed}-{self.method or 'default'}-{'.'.join(self.transforms) or 'none'}"

    @property
    def group(self) -> tuple[str | None, tuple[str, ...]]:
        """What one line of the plot shares: the method and the transforms."""
        return self.method, self.transforms

    def to_dict(self) -> dict:
        return {"size": self.size, "seed": self.seed, "method": self.method, "transforms": list(self.transforms)}


@dataclasses.dataclass(frozen=True)
class Grid:
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    methods: tuple[str | None, ...]
    transforms: tuple[tuple[str, ...], ...]
    setting: str  # the [quantization] key the method sets ("": none)

    def cells(self) -> list[Cell]:
        """Every combination, ordered by method, transforms, size, then seed."""
        return [
            Cell(size, seed, method, tr)
            for method, tr, size, seed in itertools.product(self.methods, self.transforms, self.sizes, self.seeds)
        ]

    def to_dict(self) -> dict:
        return {
            "size": list(self.sizes),
            "seed": list(self.seeds),
            "method": list(self.methods),
            "transforms": [list(t) for t in self.transforms],
        }


def read_grid(grid, profile: TargetProfile) -> Grid:
    """``grid``: a .toml/.json path, ``KEY=V1,V2`` strings (the CLI's repeated ``--grid``), or a
    mapping of axis -> list of values; checked against ``profile`` (BadInput: one line naming the
    key or value)."""
    if isinstance(grid, Mapping):
        return _checked(dict(grid), "grid", profile)
    items = [grid] if isinstance(grid, (str, Path)) else list(grid)
    if not items:
        raise BadInput("--grid is missing: pass a .toml or .json file, or KEY=V1,V2 options (size=100,300 seed=0,1)")
    inline = [str(i) for i in items if "=" in str(i)]
    if not inline:
        if len(items) > 1:
            raise BadInput(f"--grid takes one file, got {len(items)}: {', '.join(map(str, items))}")
        path = Path(items[0])
        return _checked(_read_file(path), f"grid {path}", profile)
    if len(inline) != len(items):
        files = [str(i) for i in items if "=" not in str(i)]
        raise BadInput(f"--grid {files[0]}: give either one grid file or KEY=V1,V2 options, not both")
    return _checked(_parse_inline(inline), "--grid", profile)


def _read_file(path: Path) -> dict:
    if path.suffix.lower() not in (".toml", ".json"):
        raise BadInput(f"grid {path}: not a .toml or .json file (or give the axes inline: --grid size=100,300)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"grid {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"grid {path} cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise BadInput(f"grid {path} is not valid {kind}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise BadInput(f"grid {path} must be a table of axes (size, seed, method, transforms), got {type(data).__name__}")
    return data


def _parse_inline(items: list[str]) -> dict:
    """``size=8,16`` -> {"size": [8, 16]}; ``transforms=none,cle+bias_correction`` -> [[], ["cle", "bias_correction"]]."""
    out: dict = {}
    for item in items:
        key, _, text = item.partition("=")
        key = key.strip()
        if key in out:
            raise BadInput(f"--grid {item}: axis '{key}' is given twice; list its values once, comma-separated")
        values = [v.strip() for v in text.split(",")] if text.strip() else []
        if key in ("size", "seed"):
            parsed = []
            for v in values:
                try:
                    parsed.append(int(v))
                except ValueError:
                    raise BadInput(f"--grid {item}: {key} {v!r} is not a whole number") from None
            values = parsed
        elif key == "transforms":
            values = [[] if v == "none" else [n.strip() for n in v.split("+")] for v in values]
        out[key] = values
    return out


def _checked(data: dict, where: str, profile: TargetProfile) -> Grid:
    """Every key an axis, every axis a non-empty list of valid values, none repeated."""
    for key in data:
        if key not in AXES:
            close = difflib.get_close_matches(str(key), AXES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BadInput(f"{where}: unknown key '{key}'{hint}; the axes are {', '.join(AXES)}")
    for key, value in data.items():
        if not isinstance(value, list):
            raise BadInput(f"{where}: {key} must be a list of values, e.g. {key} = {_EXAMPLES[key]}; got {value!r}")
        if not value:
            raise BadInput(f"{where}: axis '{key}' is empty; give at least one value or leave it out (default: the profile's)")
    from .. import backends

    spec = backends.get(profile.backend)
    q = profile.quantization
    own_method = getattr(q, spec.calibration_setting) if spec.calibration_setting else next(iter(spec.calibration_methods), None)
    sizes = _ints(data.get("size", [profile.calibration_size]), "size", 1, where)
    seeds = _ints(data.get("seed", [0]), "seed", 0, where)
    methods = tuple(_method(m, profile, spec, where) for m in data.get("method", [own_method]))
    transforms = tuple(_transforms(t, where) for t in data.get("transforms", [list(q.transforms)]))
    for key, values in (("method", methods), ("transforms", transforms)):
        _once(values, key, where)
    return Grid(sizes, seeds, methods, transforms, spec.calibration_setting)


_EXAMPLES = {"size": "[100, 300]", "seed": "[0, 1, 2]", "method": '["minmax"]', "transforms": '[[], ["cle"]]'}


def _ints(values: list, key: str, low: int, where: str) -> tuple[int, ...]:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= _INT_MAX:
            what = "calibration image count, at least 1" if key == "size" else "seed, 0 or more"
            raise BadInput(f"{where}: {key} {v!r} is not a whole {what}")
    _once(values, key, where)
    return tuple(values)


def _once(values: Sequence, key: str, where: str) -> None:
    seen = []
    for v in values:
        if v in seen:
            shown = list(v) if isinstance(v, tuple) else v
            raise BadInput(f"{where}: {key} {shown!r} is listed twice")
        seen.append(v)


def _method(value, profile: TargetProfile, spec, where: str) -> str | None:
    if value is None and not spec.calibration_methods:
        return None  # the default of a backend without any method to name
    allowed = spec.calibration_methods
    if not allowed:
        raise BadInput(
            f"{where}: method {value!r}: target {profile.name} ({spec.name} backend) has no calibration method to choose; "
            "leave the method axis out"
        )
    if value not in allowed:
        how = f"[quantization] {spec.calibration_setting}" if spec.calibration_setting else "its only one"
        raise BadInput(
            f"{where}: method {value!r} is not a calibration method of target {profile.name} ({spec.name} backend): "
            f"{', '.join(allowed)} ({how})"
        )
    return value


def _transforms(value, where: str) -> tuple[str, ...]:
    from ..transforms.variants import check_names

    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise BadInput(f'{where}: transforms {value!r} must be a list of transform names, e.g. [] or ["cle"]')
    return check_names(value, f"{where}: transforms {value!r}")
