"""Each cell's target profile, written as a TOML file beside its artifact: the target's own profile
with the cell's calibration size, method and transforms. It is what the cell converts with
(``convert --target OUT/cells/<cell>/profile.toml --num-calibration N --seed S`` does it again)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..profiles import QuantSpec, TargetProfile
from .grid import Cell

FILE = "profile.toml"


def cell_profile(profile: TargetProfile, setting: str, cell: Cell) -> TargetProfile:
    """``profile`` with the cell's calibration size, transforms and (when the backend has a key for
    it) calibration method."""
    q = profile.quantization.with_transforms(cell.transforms)
    if setting:
        q = dataclasses.replace(q, **{setting: cell.method})
    if getattr(q, "calibration_method", None) != "percentile":  # the level belongs to that method only
        q = dataclasses.replace(q, calibration_percentile=QuantSpec().calibration_percentile)
    return dataclasses.replace(profile, quantization=q, calibration_size=cell.size, source="")


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"a profile value cannot be {type(v).__name__}")


def profile_toml(profile: TargetProfile, comment: str) -> str:
    """The profile as TOML that ``targets.load_profile`` reads back into the same profile (unset
    optional entries are left out)."""
    data = profile.to_dict()
    data.pop("source", None)
    lines = [f"# {comment}"]
    return "\n".join(lines + _table(data, "")) + "\n"


def _table(data: dict, name: str) -> list[str]:
    """``data``'s values, then its tables (``[name.key]``), recursively; None entries left out."""
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    values = [f"{k} = {_value(v)}" for k, v in data.items() if k not in tables and v is not None]
    lines = ["", f"[{name}]", *values] if name and (values or not tables) else values
    for key, table in tables.items():
        if table or not name:
            lines += _table(table, f"{name}.{key}" if name else key)
    return lines


def write_cell_profile(folder: Path, profile: TargetProfile, cell: Cell) -> Path:
    from ..artifact import atomic_write_text

    path = Path(folder) / FILE
    comment = f"sweep cell {cell.name}: {profile.name} with calibration size {cell.size}, method {cell.method}, transforms {list(cell.transforms)}"
    atomic_write_text(path, profile_toml(profile, comment))
    return path
