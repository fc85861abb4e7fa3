"""CI accuracy gates: check an evaluation report against each artifact's `[gates]` (from its
profile, overridable by a gates file). Never passes vacuously: NaN, zero images, an artifact no
gate applies to, an artifact of another source model, or a gated name missing from the report
fail. Every row of the report is gated and named by its artifact folder."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .errors import BadInput
from .profiles import GateSpec
from .records import Report, ReportRow, is_finite_number

_FIELDS = [f.name for f in dataclasses.fields(GateSpec)]
_UNIT = ("min_top1_ratio", "min_agreement", "min_device_agreement")  # fractions: limits within 0..1
DEVICE_AGREEMENT = 0.99  # min_device_agreement when no profile or gates file sets it
UNGATED = "ungated"  # gates-file key: `[NAME] ungated = true` says no limit applies to those artifacts


@dataclasses.dataclass(frozen=True)
class GateResult:
    name: str  # the artifact folder (the report row's `name`)
    gate: str
    value: float | None
    limit: float | None
    passed: bool
    note: str = ""
    target: str | None = None  # the row's target profile


def load_report(path: Path) -> Report:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"report {path} cannot be read as JSON: {exc}") from None
    return check_report(data, path)


def check_report(report, path) -> Report:
    """The structure `gate` relies on: ``Report.from_dict``. Measured values (top1, drop_pp, …) are
    not checked there: a missing or NaN value is read as None and fails its gate."""
    return Report.from_dict(report, path)


def row_names(rows: list[ReportRow]) -> list[str]:
    """Each row's artifact folder name (`name`, else the basename of `path`), made unique."""
    names: list[str] = []
    for i, row in enumerate(rows):
        name = row.name or None
        if name is None and row.path is not None:
            name = Path(row.path).name or None
        name = name or f"artifacts[{i}]"
        names.append(name if name not in names else f"{name} (artifacts[{i}])")
    return names


def load_gates_file(path: Path) -> dict[str, dict]:
    """A TOML file of tables keyed by target or artifact folder name: `[x86-openvino-int8] max_top1_drop_pp = 1.5`,
    `[my-experiment] ungated = true`."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"--gates {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"--gates {path} is not valid TOML: {exc}") from None
    for name, table in data.items():
        if not isinstance(table, dict):
            raise BadInput(f"--gates {path}: '{name}' must be a table [{name}] of gate limits")
        check_limits(table, f"--gates {path}: [{name}]", allow_ungated=True)
    return data


def check_limits(table: dict, where: str, *, allow_ungated: bool = False) -> None:
    """Gate limits: known keys; numbers finite and ≥ 0, ratios and agreements within 0..1."""
    known = _FIELDS + ([UNGATED] if allow_ungated else [])
    for key, value in table.items():
        if key not in known:
            raise BadInput(f"{where}: unknown key '{key}'; known: {', '.join(known)}")
        if value is None:
            continue  # a manifest records unset gates as null
        if key == UNGATED:
            if not isinstance(value, bool):
                raise BadInput(f"{where} {UNGATED} = {value!r} must be true or false")
        elif key == "latency_host":
            if not isinstance(value, str):
                raise BadInput(f"{where} latency_host = {value!r} must be a string")
        elif not is_finite_number(value) or value < 0:
            raise BadInput(f"{where} {key} = {value!r} must be a finite, non-negative number")
        elif key in _UNIT and value > 1:
            raise BadInput(f"{where} {key} = {value!r} must lie within 0..1 (a fraction: 0.99 is 99%)")
    limits = [k for k in table if k not in (UNGATED, "latency_host") and table[k] is not None]
    if table.get(UNGATED) is True and limits:
        raise BadInput(f"{where}: {UNGATED} = true cannot be combined with limits ({', '.join(limits)}); keep one of them")


def _profile_gates(row: ReportRow) -> dict:
    """The gates the artifact was converted with (its manifest), else the built-in profile's."""
    manifest = Path(row.path) / "manifest.json" if row.path else None
    gates = None
    try:
        if manifest is not None and manifest.is_file():
            _check_manifest_unchanged(manifest, row)
            gates = json.loads(manifest.read_text(encoding="utf-8"))["profile"]["gates"]
    except (OSError, KeyError, TypeError, ValueError, RecursionError):
        pass
    if gates is not None:
        if not isinstance(gates, dict):
            raise BadInput(f"{manifest}: profile.gates must be a table, got {type(gates).__name__}; convert the model again")
        check_limits(gates, f"{manifest}: profile.gates")
        return {k: v for k, v in gates.items() if v is not None}
    from .targets import builtin_names, resolve_target

    if row.target in builtin_names():
        return {k: v for k, v in dataclasses.asdict(resolve_target(row.target).gates).items() if v is not None}
    return {}


def _check_manifest_unchanged(manifest: Path, row: ReportRow) -> None:
    """The gates come from the manifest the report measured (its sha256 is in the row): a
    manifest edited since, e.g. to loosen its gates, is refused."""
    from .calibration import sha256_file

    recorded = row.manifest_sha256
    if not isinstance(recorded, str) or sha256_file(manifest) != recorded:
        raise BadInput(
            f"{manifest} is not the manifest the report measured (its sha256 differs from the report's "
            "manifest_sha256); run `xception-edge evaluate` again"
        )


def _num(v) -> float | None:
    """A finite number, else None (missing, null, NaN, inf, a string, …)."""
    if not is_finite_number(v):
        return None
    return float(v)


def evaluate_gates(report: Report, overrides: dict[str, dict] | None = None) -> list[GateResult]:
    """Every row of `artifacts`, by folder name, and every row of `devices` (`evaluate --device`),
    as NAME@DEVICE. A gates-file table keyed by a row's name is used instead of one keyed by its
    target (a device row: its own name, then its artifact's, then its target); either is laid over
    the profile's gates."""
    overrides = overrides or {}
    rows = list(report.artifacts)
    names = row_names(rows)
    by_path = {row.path: name for name, row in zip(names, rows) if row.path}
    on_device = [by_path.get(row.path) or row.name or f"devices[{i}]" for i, row in enumerate(report.devices)]
    device_names = [f"{n}@{row.device_label or 'device'}" for n, row in zip(on_device, report.devices)]
    known = set(names) | {row.target for row in rows} | set(device_names)
    missing = "missing from the report (no artifact has this target or folder name)"
    results = [GateResult(key, "present", None, None, False, missing) for key in sorted(set(overrides) - known)]
    ref_top1 = report.reference.top1
    host_cpu = str(report.host.get("cpu", ""))
    for name, row in zip(names, rows):
        target = row.target
        table = overrides.get(name, overrides.get(target, {}) if target is not None else {})
        results += _gate_row(GateResult(name, "", None, None, False, "", target), row, ref_top1, table, host_cpu)
    for name, artifact, row in zip(device_names, on_device, report.devices):
        target = row.target
        table = overrides.get(name, overrides.get(artifact, overrides.get(target, {}) if target else {}))
        results += _gate_row(GateResult(name, "", None, None, False, "", target), row, ref_top1, table, host_cpu)
    if not results:
        results.append(GateResult("(report)", "artifacts", 0, None, False, "the report has no gated artifacts"))
    return results


def _integrity(base: GateResult, row: ReportRow, ref_top1) -> list[GateResult]:
    """What every row needs whatever its limits: images, finite top-1 of artifact and reference,
    and the same source model. Reported only when they fail."""
    out = []
    images = _num(row.images)
    if images is None or images <= 0:
        out.append(
            dataclasses.replace(base, gate="images", value=images, note="no images were evaluated (or the count is missing)")
        )
    for gate, value, whose in (
        ("top1", row.top1, "the artifact's"),
        ("reference_top1", ref_top1, "the Keras reference's"),
    ):
        v = _num(value)
        if v is None or not 0 <= v <= 1:
            out.append(
                dataclasses.replace(
                    base, gate=gate, value=v, note=f"{whose} top-1 is missing, NaN or not a fraction in the report"
                )
            )
    if row.same_source_model is not True:
        out.append(
            dataclasses.replace(
                base,
                gate="same_source_model",
                note=(
                    "the artifact was converted from another model than the report's --model (or the report cannot confirm it "
                    "by sha256); evaluate it with the model it was converted from"
                ),
            )
        )
    return out


def _gate_row(base: GateResult, row: ReportRow, ref_top1, table: dict, host_cpu: str) -> list[GateResult]:
    out = _integrity(base, row, ref_top1)
    if any(r.gate == "images" for r in out):
        return out
    if table.get(UNGATED) is True:
        return out + [dataclasses.replace(base, gate=UNGATED, passed=True, note="not gated: `ungated = true` in the gates file")]
    gates = {**_profile_gates(row), **{k: v for k, v in table.items() if k != UNGATED}}
    limits = _limits(base, row, gates, host_cpu)
    if not any(r.gate != "max_p50_latency_ms" or not r.note.startswith("skipped") for r in limits):
        out.append(
            dataclasses.replace(
                base,
                gate="gates",
                note=(
                    "no gate applies to this artifact (its target has no [gates], or its manifest is gone); set limits for it "
                    f"in a --gates file, or `{UNGATED} = true` to say it is not gated"
                ),
            )
        )
    return out + limits


def _limits(base: GateResult, row: ReportRow, gates: dict, host_cpu: str) -> list[GateResult]:
    size = _num(row.size_bytes)
    drop = _num(row.drop_pp)
    checks = {
        "max_top1_drop_pp": (None if drop is None else -drop, lambda v, l: v <= l),
        "max_top1_drop_pp_upper": (_worst_drop(row), lambda v, l: v <= l),
        "min_top1_ratio": (_num(row.ratio), lambda v, l: v >= l),
        "min_agreement": (_num(row.agreement), lambda v, l: v >= l),
        "max_size_mb": (None if size is None else size / 1e6, lambda v, l: v <= l),
        "max_p50_latency_ms": (_num(row.p50_ms), lambda v, l: v <= l),
    }
    if row.device is not None:  # a device row: parity with this host's outputs, 0.99 unless set
        gates = {**gates, "min_device_agreement": gates.get("min_device_agreement", DEVICE_AGREEMENT)}
        checks["min_device_agreement"] = (_num((row.parity or {}).get("top1_agreement")), lambda v, l: v >= l)
    out = []
    for gate, (value, ok) in checks.items():
        limit = gates.get(gate)
        if limit is None:
            continue
        r = dataclasses.replace(base, gate=gate, value=value, limit=float(limit))
        if gate == "max_p50_latency_ms":
            skipped = _latency_skipped(r, row, gates.get("latency_host"), host_cpu)
            if skipped is not None:
                out.append(skipped)
                continue
        if value is None:
            out.append(dataclasses.replace(r, note=_MISSING.get(gate, "value missing, not a number, or NaN/inf in the report")))
        else:
            out.append(dataclasses.replace(r, passed=bool(ok(value, float(limit))), note=_drop_note(gate, row)))
    return out


_MISSING = {
    "max_top1_drop_pp_upper": (
        "the row has no drop_ci_pp [low, high] of finite numbers (a report or --resume row from before "
        "confidence intervals?); run `xception-edge evaluate` again"
    )
}


def _worst_drop(row: ReportRow) -> float | None:
    """The upper end of the loss's 95% interval (pp, positive = worse): -drop_ci_pp[0]; None when
    the row has no interval of two finite numbers."""
    ci = row.drop_ci_pp
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(is_finite_number(x) for x in ci) or ci[0] > ci[1]:
        return None
    return -float(ci[0]) + 0.0


def _drop_note(gate: str, row: ReportRow) -> str:
    """For the drop gates: the drop's 95% interval and McNemar's p, when the row has them."""
    if gate not in ("max_top1_drop_pp", "max_top1_drop_pp_upper") or _worst_drop(row) is None:
        return ""
    low, high = row.drop_ci_pp
    drop, p = _num(row.drop_pp), _num(row.mcnemar_p)
    parts = [] if drop is None else [f"drop {drop:+.2f} pp"]
    parts.append(f"95% CI [{low:+.2f}, {high:+.2f}]")
    parts += [] if p is None else [f"McNemar p = {p:.3g}"]
    return ", ".join(parts)


def _latency_skipped(r: GateResult, row: ReportRow, want, host_cpu: str) -> GateResult | None:
    """The latency gate's result when it does not apply to ``row`` (None: it does). A host row is
    gated when ``latency_host`` is in the report's host CPU; a device row when it is in the
    device's spec, CPU or core, and never on an emulated device."""
    if row.device is None:
        if want and want.lower() in host_cpu.lower():
            return None
        return dataclasses.replace(
            r, passed=True, note=f"skipped: report made on '{host_cpu}', gate is for '{want or 'no host named'}'"
        )
    if row.latency_emulated is not False:
        return dataclasses.replace(r, passed=True, note=f"skipped: latency on {row.device_label} is emulated (QEMU), never gated")
    host = row.device_host or {}
    names = [row.device_label or "", str(host.get("cpu", "")), str(host.get("cpu_core", "")), str(host.get("board", ""))]
    if want and any(want.lower() in n.lower() for n in names if n):
        return None
    return dataclasses.replace(
        r, passed=True, note=f"skipped: measured on {row.device_label}, gate is for '{want or 'no host named'}'"
    )


_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    return _XML_BAD.sub("?", text)


def junit_xml(results: list[GateResult]) -> str:
    failures = sum(not r.passed for r in results)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuite name="xception-edge gates" tests="{len(results)}" failures="{failures}">',
    ]
    for r in results:
        lines.append(f"  <testcase classname={quoteattr(_xml(r.name))} name={quoteattr(_xml(r.gate))}>")
        if not r.passed:
            lines.append(f"    <failure message={quoteattr(_xml(describe(r)))}>{escape(_xml(describe(r)))}</failure>")
        elif r.note:
            lines.append(f"    <system-out>{escape(_xml(r.note))}</system-out>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def describe(r: GateResult) -> str:
    who = r.name if not r.target or r.target == r.name else f"{r.name} ({r.target})"
    if r.note and r.value is None:
        return f"{who}: {r.gate}: {r.note}"
    value = "—" if r.value is None else f"{r.value + 0.0:.4g}"
    limit = "—" if r.limit is None else f"{r.limit:.4g}"
    return f"{who}: {r.gate} = {value} (limit {limit}){' — ' + r.note if r.note else ''}"


def table_rows(results: list[GateResult]) -> list[GateResult]:
    """For tables.gate_table (its first column reads `.target`, and rich reads markup): the folder
    name in that column, markup escaped."""
    from rich.markup import escape as plain

    return [dataclasses.replace(r, target=plain(r.name), gate=plain(r.gate), note=plain(r.note)) for r in results]


def inspect_hints(report: Report, results: list[GateResult]) -> list[str]:
    """For each failed int8 artifact: the `inspect` command that names the layers to blame."""
    failed = {r.name for r in results if not r.passed}
    model = report.model.get("spec", "MODEL")
    out = []
    rows = list(report.artifacts)
    for name, row in zip(row_names(rows), rows):
        if name not in failed or row.precision != "int8" or row.path is None:
            continue
        out.append(
            f"{name}: to see which layers are to blame, run: xception-edge inspect {row.path} "
            f"--model {model} --calibration {_calibration_of(Path(row.path))}  "
            "(then `convert --max-drop PP --validation DIR` keeps them in float)"
        )
    return out


def _calibration_of(folder: Path) -> str:
    calib = "CALIBRATION"
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        calib = str((manifest.get("calibration") or {}).get("source") or calib)
        if Path(calib).is_file():  # a list file: its paths are relative to the root calibration.txt records
            header = (folder / "calibration.txt").read_text(encoding="utf-8").splitlines()[:3]
            root = next((h.split(":", 1)[1].strip() for h in header if h.startswith("# root:")), None)
            calib += f" --calibration-root {root}" if root and Path(root) != Path(calib).parent else ""
    except (OSError, KeyError, TypeError, ValueError, AttributeError, RecursionError):
        pass
    return calib
