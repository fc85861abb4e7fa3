"""CI accuracy gates: check an evaluation report against each target's `[gates]` (from its
profile, overridable by a gates file). Never passes vacuously: NaN, zero images, or a gated
target missing from the report fail."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .errors import BadInput
from .types import GateSpec

REPORT_SCHEMA = "xception-edge/report"
REPORT_VERSION = 1
_FIELDS = [f.name for f in dataclasses.fields(GateSpec)]


@dataclasses.dataclass(frozen=True)
class GateResult:
    target: str
    gate: str
    value: float | None
    limit: float | None
    passed: bool
    note: str = ""


def load_report(path: Path) -> dict:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"report {path} cannot be read as JSON: {exc}") from None
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        raise BadInput(f"{path} is not an xception-edge report (schema {REPORT_SCHEMA}); write one with `xception-edge evaluate`")
    if report.get("schema_version") != REPORT_VERSION:
        raise BadInput(f"{path} has report schema version {report.get('schema_version')}, this gate reads {REPORT_VERSION}; "
                       "run `xception-edge evaluate` again")
    return report


def load_gates_file(path: Path) -> dict[str, dict]:
    """A TOML file of per-target tables: `[x86-openvino-int8] max_top1_drop_pp = 1.5`."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--gates {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"--gates {path} is not valid TOML: {exc}") from None
    for target, table in data.items():
        if not isinstance(table, dict):
            raise BadInput(f"--gates {path}: '{target}' must be a table [{target}] of gate limits")
        for key, value in table.items():
            if key not in _FIELDS:
                raise BadInput(f"--gates {path}: unknown key '{key}' in [{target}]; known: {', '.join(_FIELDS)}")
            if key == "latency_host":
                if not isinstance(value, str):
                    raise BadInput(f"--gates {path}: [{target}] latency_host must be a string")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise BadInput(f"--gates {path}: [{target}] {key} = {value!r} must be a non-negative number")
    return data


def _profile_gates(row: dict) -> dict:
    """The gates the artifact was converted with (its manifest), else the built-in profile's."""
    manifest = Path(row.get("path", "")) / "manifest.json"
    try:
        return dict(json.loads(manifest.read_text(encoding="utf-8"))["profile"]["gates"])
    except (OSError, KeyError, TypeError, ValueError):
        pass
    from .targets import builtin_names, resolve_target

    if row.get("target") in builtin_names():
        return dataclasses.asdict(resolve_target(row["target"]).gates)
    return {}


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def evaluate_gates(report: dict, overrides: dict[str, dict] | None = None) -> list[GateResult]:
    overrides = overrides or {}
    rows = {row["target"]: row for row in report.get("artifacts", [])}
    results: list[GateResult] = []
    for name in sorted(set(overrides) - set(rows)):
        results.append(GateResult(name, "present", None, None, False, "target is missing from the report"))
    host_cpu = (report.get("host") or {}).get("cpu", "")
    for name, row in rows.items():
        gates = {k: v for k, v in {**_profile_gates(row), **overrides.get(name, {})}.items() if v is not None}
        images = row.get("images") or 0
        if images <= 0:
            results.append(GateResult(name, "images", images, None, False, "no images were evaluated"))
            continue
        checks = {
            "max_top1_drop_pp": (None if _num(row.get("drop_pp")) is None else -row["drop_pp"], lambda v, l: v <= l),
            "min_top1_ratio": (_num(row.get("ratio")), lambda v, l: v >= l),
            "min_agreement": (_num(row.get("agreement")), lambda v, l: v >= l),
            "max_size_mb": (None if _num(row.get("size_bytes")) is None else row["size_bytes"] / 1e6, lambda v, l: v <= l),
            "max_p50_latency_ms": (_num((row.get("latency") or {}).get("p50_ms")), lambda v, l: v <= l),
        }
        for gate, (value, ok) in checks.items():
            limit = gates.get(gate)
            if limit is None:
                continue
            if gate == "max_p50_latency_ms":
                want = gates.get("latency_host")
                if not want or want.lower() not in host_cpu.lower():
                    results.append(GateResult(name, gate, value, limit, True,
                                              f"skipped: report made on '{host_cpu}', gate is for '{want or 'no host named'}'"))
                    continue
            if value is None or math.isnan(value):
                results.append(GateResult(name, gate, value, limit, False, "value missing or NaN in the report"))
            else:
                results.append(GateResult(name, gate, value, float(limit), bool(ok(value, float(limit)))))
    if not results:
        results.append(GateResult("(report)", "artifacts", 0, None, False, "the report has no gated artifacts"))
    return results


def junit_xml(results: list[GateResult]) -> str:
    failures = sum(not r.passed for r in results)
    lines = [f'<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name="xception-edge gates" tests="{len(results)}" failures="{failures}">']
    for r in results:
        name = quoteattr(f"{r.gate}")
        lines.append(f"  <testcase classname={quoteattr(r.target)} name={name}>")
        if not r.passed:
            lines.append(f"    <failure message={quoteattr(describe(r))}>{escape(describe(r))}</failure>")
        elif r.note:
            lines.append(f"    <system-out>{escape(r.note)}</system-out>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def describe(r: GateResult) -> str:
    if r.note and r.value is None:
        return f"{r.target}: {r.gate}: {r.note}"
    value = "—" if r.value is None else f"{r.value + 0.0:.4g}"
    limit = "—" if r.limit is None else f"{r.limit:.4g}"
    return f"{r.target}: {r.gate} = {value} (limit {limit}){' — ' + r.note if r.note else ''}"


def inspect_hints(report: dict, results: list[GateResult]) -> list[str]:
    """For each failed int8 target: the `inspect` command that names the layers to blame."""
    failed = {r.target for r in results if not r.passed}
    model = (report.get("model") or {}).get("spec", "MODEL")
    out = []
    for row in report.get("artifacts", []):
        if row.get("target") not in failed or row.get("precision") != "int8":
            continue
        calib = "CALIBRATION"
        try:
            manifest = json.loads((Path(row["path"]) / "manifest.json").read_text(encoding="utf-8"))
            calib = (manifest.get("calibration") or {}).get("source") or calib
            if Path(calib).is_file():  # a list file: its paths are relative to the root calibration.txt records
                header = (Path(row["path"]) / "calibration.txt").read_text(encoding="utf-8").splitlines()[:3]
                root = next((h.split(":", 1)[1].strip() for h in header if h.startswith("# root:")), None)
                calib += f" --calibration-root {root}" if root and Path(root) != Path(calib).parent else ""
        except (OSError, KeyError, TypeError, ValueError):
            pass
        out.append(f"{row['target']}: to see which layers are to blame, run: xception-edge inspect {row['path']} "
                   f"--model {model} --calibration {calib}  (then `convert --max-drop PP --validation DIR` keeps them in float)")
    return out
