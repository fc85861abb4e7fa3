"""The evaluation report: report.json (schema in docs/report-schema.md), report.md (tables for a
terminal or a pull request), report.html (self-contained, with plots), and the terminal table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .artifact import atomic_write_text
from .records import Report, ReportRow


def rows(report: Report) -> list[ReportRow]:
    """The Keras fp32 row, then one per artifact."""
    return report.rows


def fmt_mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.2f} MB"


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def fmt_pp(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"


def fmt_drop(r: ReportRow) -> str:
    """The top-1 drop with its 95% interval when the row has one: ``-0.33 [-0.83, +0.17]``."""
    ci = r.drop_ci_pp
    if r.drop_pp is None or not (isinstance(ci, (list, tuple)) and len(ci) == 2):
        return fmt_pp(r.drop_pp)
    return f"{r.drop_pp:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


DROP_NOTE = (
    "*Δ top-1 [95% CI]*: the drop against Keras fp32 with its 95% paired-bootstrap interval (the same images "
    "resampled for both models); *p (McNemar)*: exact McNemar test on the images one model got right and the other "
    "not. An interval that contains 0 and a large p mean the drop is not distinguishable from noise on these images."
)


def fmt_ratio(r: ReportRow) -> str:
    if r.ratio is None:
        return "—"
    return f"{100 * r.ratio:.2f}%" + ("" if r.meets_mlperf_99 else " ✗")


def summary_cells(r: ReportRow) -> list[str]:
    lat = r.latency
    return [
        r.name,
        r.backend,
        r.precision,
        fmt_mb(r.size_bytes),
        fmt_pct(r.top1),
        fmt_drop(r),
        fmt_p(r.mcnemar_p),
        fmt_ratio(r),
        fmt_pct(r.top5),
        fmt_pct(r.agreement),
        str(r.flipped),
        f"{lat['p50_ms']:.2f}",
        f"{lat['p90_ms']:.2f}",
    ]


SUMMARY_COLUMNS = [
    "model",
    "backend",
    "precision",
    "size",
    "top-1",
    "Δ top-1 (pp) [95% CI]",
    "p (McNemar)",
    "of fp32",
    "top-5",
    "agreement",
    "flips",
    "p50 ms",
    "p90 ms",
]


def notes(report: Report) -> list[str]:
    out = []
    for r in report.artifacts:
        if r.cpu_warning:
            out.append(f"{r.name}: {r.cpu_warning}")
        if r.float_layers:
            share = f", {100 * r.float_mac_share:.1f}% of MACs" if r.float_mac_share is not None else ""
            why = f" to keep the --max-drop {r.max_drop_pp:g} pp budget" if r.max_drop_pp is not None else ""
            out.append(f"{r.name}: {len(r.float_layers)} layer(s) kept in float{why}{share}: {', '.join(r.float_layers)}")
        if r.same_source_model is False:
            out.append(f"{r.name}: converted from another model than --model; its agreement says little")
    reused = [r.name for r in rows(report) if r.reused]
    if reused:
        out.append(f"reused from an earlier run (--resume): {', '.join(reused)}")
    if report.settings.get("executor") == "ray":
        ray = report.timing.get("ray") or {}
        how = f": {ray['shards']} shard(s), {ray['computed']} computed, {ray['reused']} reused" if "shards" in ray else ""
        spec = (report.devices[0].device or {}).get("spec") if report.devices else None
        on = f" and, for the device rows, on {spec} (their accuracy too)" if spec else ""
        out.append(
            f"accuracy computed on Ray{how}; latency measured on this host ({report.host.get('cpu')}){on}, not on the Ray workers"
        )
    return out


def ray_lines(report: Report) -> list[str]:
    """`evaluate --executor ray`: images/s per node and in all (report.md)."""
    ray = report.timing.get("ray")
    if not isinstance(ray, dict) or not ray.get("nodes"):
        return []
    lines = [
        "",
        "## Ray throughput",
        "",
        "| node | shards | images | busy s | loading s | images/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in ray["nodes"]:
        rate = f"{n['images_per_s']:.1f}" if n.get("images_per_s") else "—"
        lines.append(
            f"| {n['ip']} ({n['node_id'][:8]}) | {n['shards']} | {n['images']} | {n['busy_seconds']:.1f} | {n['load_seconds']:.1f} | {rate} |"
        )
    total = f"{ray['images_per_s']:.1f}" if ray.get("images_per_s") else "—"
    lines += [
        "",
        f"Total: {ray['images']} images in {ray['wall_seconds']:.1f} s, {total} images/s (an image: Keras and every artifact).",
    ]
    return lines


def timing_sentence(report: Report) -> str:
    t, d, workers = report.timing, report.data, report.settings["decode_threads"]
    how = f"in {workers} background thread(s) while" if workers else "in the main thread, before"
    return (
        f"Decoding {d['images']} images once for every model cost {t['decode_cpu_seconds']:.2f} s of CPU, {how} the "
        f"Keras pass ran ({t['keras_predict_seconds']:.2f} s in predict): {t['first_pass_wall_seconds']:.2f} s wall, "
        f"against {t['serial_estimate_seconds']:.2f} s for decoding then predicting. Model load "
        f"{t['model_load_seconds']:.2f} s; everything {t['total_seconds']:.1f} s."
    )


def markdown(report: Report) -> str:
    d, h, s = report.data, report.host, report.settings
    lines = [
        f"# xception-edge evaluation: {Path(d['source']).name}",
        "",
        f"{d['images']} images from `{d['source']}` ({d['decoded']} decoded, {len(d['undecodable'])} undecodable, "
        f"counted as misses); model `{report.model['spec']}`; host {h['cpu']} ({h['machine']}, {h['cpu_count']} cores, "
        f"int8 flags: {', '.join(h['int8_flags']) or 'none'}); latency: {s['runs']} runs after {s['warmup']} warm-up, batch 1.",
        "",
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "| " + " | ".join(["---"] * 3 + ["---:"] * (len(SUMMARY_COLUMNS) - 3)) + " |",
    ]
    lines += ["| " + " | ".join(summary_cells(r)) + " |" for r in rows(report)]
    lines += [
        "",
        f"*of fp32*: top-1 as a share of Keras fp32 top-1 (✗: below MLPerf's {100 * s['mlperf_ratio']:.0f}%). "
        "*agreement*: share of images whose top-1 equals Keras's; *flips*: images where it differs.",
        "",
        DROP_NOTE,
        "",
    ]
    for n in notes(report):
        lines.append(f"- {n}")
    from . import report_devices

    lines += report_devices.markdown(report)
    lines += ["", "## Per-class top-1 (Δ vs Keras fp32, percentage points)", ""]
    classes = list(report.reference.per_class)
    names = [r.name for r in report.artifacts]
    lines.append("| class | images | keras-fp32 | " + " | ".join(names) + " |")
    lines.append("| --- | ---: | ---: | " + " | ".join(["---:"] * len(names)) + " |")
    for c in classes:
        ref = report.reference.per_class[c]
        cells = [f"{r.per_class[c]['drop_pp']:+.1f}" if c in r.per_class else "—" for r in report.artifacts]
        lines.append(f"| {c} | {ref['images']} | {100 * ref['top1']:.1f}% | " + " | ".join(cells) + " |")
    flipped = [(r.name, c, f) for r in report.artifacts for c, fs in r.flips_per_class.items() for f in fs]
    lines += ["", "## Flipped images (top-1 differs from Keras fp32)", ""]
    if not flipped:
        lines.append("None.")
    else:
        lines += ["| artifact | class | image | Keras | artifact |", "| --- | --- | --- | --- | --- |"]
        shown = flipped[:200]
        lines += [f"| {n} | {c} | `{f['image']}` | {f['keras']} | {f['artifact']} |" for n, c, f in shown]
        if len(flipped) > len(shown):
            lines.append(f"\n… and {len(flipped) - len(shown)} more in report.json.")
    if d["undecodable"]:
        lines += ["", "## Undecodable images (counted as misses)", ""]
        lines += [f"- `{u['image']}` ({u['label']}): {u['error']}" for u in d["undecodable"]]
    lines += ray_lines(report)
    if "first_pass_wall_seconds" in report.timing:
        lines += ["", "## Timing", "", timing_sentence(report)]
    return "\n".join(lines) + "\n"


def write_report(report: Report, folder: Path) -> dict[str, Path]:
    """report.json, report.md and report.html, each written atomically."""
    from .report_html import html

    folder = Path(folder)
    paths = {"json": folder / "report.json", "markdown": folder / "report.md", "html": folder / "report.html"}
    atomic_write_text(paths["html"], html(report))
    atomic_write_text(paths["markdown"], markdown(report))
    files = {k: str(v) for k, v in paths.items()}
    atomic_write_text(paths["json"], json.dumps(dataclasses.replace(report, files=files).to_dict(), indent=1) + "\n")
    for p in paths.values():
        p.chmod(0o644)  # a report is for reading (and serving); the temporary file was private
    return paths


def print_report(report: Report) -> None:
    from rich.table import Table

    from .tables import Console

    d = report.data
    t = Table(title=f"Evaluation on {d['images']} images of {d['source']}")
    for i, col in enumerate(SUMMARY_COLUMNS):
        t.add_column(col, justify="left" if i < 3 else "right")
    for r in rows(report):
        t.add_row(*summary_cells(r))
    con = Console()
    con.print(t)
    con.print(DROP_NOTE.replace("*", ""), highlight=False)
    if report.devices:
        from . import report_devices

        dt = Table(title="On the device")
        for i, col in enumerate(report_devices.COLUMNS):
            dt.add_column(col, justify="left" if i < 3 else "right")
        for cells in report_devices.table(report):
            dt.add_row(*cells)
        con.print(dt)
    for n in notes(report):
        con.print(f"  • {n}", highlight=False)
    if d["undecodable"]:
        con.print(f"  • {len(d['undecodable'])} undecodable image(s), counted as misses", highlight=False)
    con.print(f"report: {report.files['html']} (also report.md, report.json)", highlight=False)
