"""The report's device rows (`evaluate --device`), one per artifact run on the device, next to
the same artifact's row on this host: accuracy there, parity with this host's outputs, and the
two latencies side by side (an emulated device's marked as such: it says nothing of speed)."""

from __future__ import annotations

from .records import Report, ReportRow
from .report import fmt_drop, fmt_p

COLUMNS = [
    "artifact",
    "device",
    "CPU",
    "top-1",
    "Δ top-1 (pp) [95% CI]",
    "p (McNemar)",
    "parity top-1",
    "max Δ (steps)",
    "device p50 ms [95% CI]",
    "host p50 ms",
]


def _p50(row: ReportRow) -> str:
    lat = row.latency or {}
    p50 = lat.get("p50_ms")
    if p50 is None:
        return "—"
    ci = lat.get("p50_ci_ms")
    text = f"{p50:.2f}" + (f" [{ci[0]:.2f}–{ci[1]:.2f}]" if isinstance(ci, list) and len(ci) == 2 else "")
    return text + (" (emulated)" if row.latency_emulated else "")


def _cpu(row: ReportRow) -> str:
    host = row.device_host or {}
    core = host.get("cpu_core") or host.get("cpu") or "?"
    return f"{host.get('machine', '?')} {core}"


def cells(row: ReportRow, host_row: ReportRow | None) -> list[str]:
    p = row.parity or {}
    agreement = p.get("top1_agreement")
    verdict = "" if p.get("passed", True) else " ✗"
    return [
        row.name or "?",
        row.device_label or "?",
        _cpu(row),
        "—" if row.top1 is None else f"{100 * row.top1:.2f}%",
        fmt_drop(row),
        fmt_p(row.mcnemar_p),
        "—" if agreement is None else f"{100 * agreement:.2f}%{verdict}",
        "—" if p.get("max_step_diff") is None else f"{p['max_step_diff']:g}",
        _p50(row),
        "—" if host_row is None or host_row.p50_ms is None else f"{host_row.p50_ms:.2f}",
    ]


def table(report: Report) -> list[list[str]]:
    """One row of cells per device row (empty without --device)."""
    host_rows = {r.path: r for r in report.artifacts}
    return [cells(r, host_rows.get(r.path)) for r in report.devices]


def note(report: Report) -> str:
    emulated = any(r.latency_emulated for r in report.devices)
    text = (
        "*parity top-1*: share of images whose top-1 on the device equals this host's for the same artifact "
        "(✗: below the profile's min_device_agreement, 0.99 unless set); *max Δ*: the largest output difference "
        "in output quantization steps."
    )
    if emulated:
        text += " Latency marked *emulated* ran under QEMU: it says nothing about any device's speed and is never gated."
    return text


def markdown(report: Report) -> list[str]:
    if not report.devices:
        return []
    lines = ["", "## On the device", "", "| " + " | ".join(COLUMNS) + " |"]
    lines.append("| " + " | ".join(["---"] * 3 + ["---:"] * (len(COLUMNS) - 3)) + " |")
    lines += ["| " + " | ".join(c) + " |" for c in table(report)]
    return lines + ["", note(report)]
