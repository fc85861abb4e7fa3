"""report.html: one self-contained file (no external URL), plots rendered by matplotlib (Agg)
to PNG and embedded as base64 data URIs."""

from __future__ import annotations

import base64
import html as _html
import io

from .records import REPORT_SCHEMA, REPORT_VERSION, Report
from .report import DROP_NOTE, SUMMARY_COLUMNS, notes, rows, summary_cells, timing_sentence

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.3em 0.6em}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.ref td{background:#f7fbff;font-weight:600}
td.bad{color:#b00020}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
.note{color:#555}
code{font-size:0.9em}
details{margin:0.5em 0}
"""


def backend_colours() -> dict[str, str]:
    from . import backends

    return {"keras": "#222222", **{name: spec.colour for name, spec in backends.registry().items()}}


_MARKERS = {"fp32": "o", "fp16": "s", "dynamic-int8": "D", "int8": "^"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plain_log_ticks(axis) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _label_points(fig, ax, pts) -> None:
    """Name every (x, y, name) point without labels overlapping: each label goes right of its point and moves
    down (then up) in steps of one line until it clears the labels already placed."""
    fig.canvas.draw()
    trans, frame = ax.transData, ax.get_window_extent()
    line = 11.0  # pixels per label line at fontsize 8, dpi 100
    placed = [(px - 6, py - 6, px + 6, py + 6) for px, py in (trans.transform((x, y)) for x, y, _ in pts)]  # the markers
    for x, y, name in sorted(pts, key=lambda p: (-p[1], p[0])):
        px, py = trans.transform((x, y))
        w = 6.0 * len(name) + 4
        for k in [0, *[s * i for i in range(1, 40) for s in (-1, 1)]]:
            box = (px + 7, py - line / 2 + k * line, px + 7 + w, py + line / 2 + k * line)
            inside = frame.y0 <= box[1] and box[3] <= frame.y1
            if inside and not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in placed):
                break
        placed.append(box)
        dy_points = k * line * 72 / fig.dpi
        ax.annotate(
            name,
            (x, y),
            xytext=(7 * 72 / fig.dpi, dy_points),
            textcoords="offset points",
            fontsize=8,
            va="center",
            arrowprops={"arrowstyle": "-", "color": "#aaa", "lw": 0.6} if k else None,
        )


def plots(report: Report) -> dict[str, str]:
    """The three figures as PNG data URIs: trade-off, latency distributions, per-class drop."""
    import matplotlib

    matplotlib.use("Agg")

    out = {"tradeoff": _tradeoff_plot(report), "latency": _latency_plot(report)}
    if report.artifacts:
        out["per_class"] = _per_class_plot(report)
    return out


def _tradeoff_plot(report: Report) -> str:
    """Accuracy vs p50 latency: the trade-off picture."""
    import matplotlib.pyplot as plt

    rs = rows(report)
    ref = report.reference
    colours = backend_colours()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    pts = [(r.latency["p50_ms"], 100 * r.top1, r) for r in rs]
    for x, y, r in pts:
        ax.scatter(
            x,
            y,
            s=110 if r is ref else 55,
            color=colours.get(r.backend, "#ff7f0e"),
            marker="*" if r is ref else _MARKERS.get(r.precision, "o"),
            zorder=3,
            edgecolor="white",
        )
    ax.axhline(100 * ref.top1, color="#888", ls="--", lw=1, label=f"Keras fp32 top-1 {100 * ref.top1:.2f}%")
    ax.axhline(
        100 * ref.top1 * report.settings["mlperf_ratio"],
        color="#c44",
        ls=":",
        lw=1,
        label=f"{100 * report.settings['mlperf_ratio']:.0f}% of fp32 (MLPerf)",
    )
    ax.set_xscale("log")
    xs = [p[0] for p in pts]
    ax.set_xlim(min(xs) / 1.25, max(xs) * 1.6)
    ax.margins(y=0.15)  # room for the labels above and below the extreme points
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("p50 latency per image, ms (batch 1, log scale)")
    ax.set_ylabel("top-1, %")
    ax.set_title("Accuracy vs latency (colour: backend, marker: precision)")
    ax.grid(True, which="both", alpha=0.3)
    _label_points(fig, ax, [(x, y, r.name) for x, y, r in pts])
    handles = _tradeoff_legend(report, colours)
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _png(fig)


def _tradeoff_legend(report: Report, colours: dict[str, str]) -> list:
    """One handle per backend (colour) and per precision (marker) that the report holds."""
    import matplotlib.pyplot as plt

    rs = rows(report)
    handles = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=b) for b, c in colours.items() if any(r.backend == b for r in rs)
    ]
    handles += [
        plt.Line2D([], [], color="#555", marker=m, ls="", label=p)
        for p, m in _MARKERS.items()
        if any(r.precision == p for r in report.artifacts)
    ]
    return handles


def _latency_plot(report: Report) -> str:
    """Latency distributions, one box per model."""
    import matplotlib.pyplot as plt

    rs = rows(report)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rs) + 1.2))
    ax.boxplot([r.latency["samples_ms"] for r in rs][::-1], vert=False, showfliers=True, widths=0.6, flierprops={"markersize": 3})
    ax.set_yticks(range(1, len(rs) + 1), [r.name for r in rs][::-1], fontsize=8)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(f"latency per image, ms ({report.settings['runs']} timed runs, log scale)")
    ax.set_title("Latency distributions")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _png(fig)


def _per_class_plot(report: Report) -> str:
    """Per-class top-1 drop vs Keras (percentage points), a class x artifact heat map."""
    import matplotlib.pyplot as plt
    import numpy as np

    classes = list(report.reference.per_class)
    arts = report.artifacts
    grid = np.array([[a.per_class.get(c, {}).get("drop_pp", np.nan) for a in arts] for c in classes])
    lim = max(1.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(arts), 0.35 * len(classes) + 2.0))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(arts)), [a.name for a in arts], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(arts)):
            if np.isfinite(grid[i, j]):
                v = grid[i, j]
                ax.text(
                    j,
                    i,
                    f"{v:+.1f}" if v else "0",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(v) > 0.6 * lim else ("black" if v else "#999"),
                )
    fig.colorbar(im, ax=ax, label="Δ top-1 vs Keras fp32, pp")
    ax.set_title("Per-class top-1 change vs Keras fp32")
    return _png(fig)


def _e(x) -> str:
    return _html.escape(str(x))


def _table(header: list[str], body: list[list[str]], *, ref_first: bool = False, numeric_from: int = 1) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in header)
    trs = []
    for k, cells in enumerate(body):
        cls = ' class="ref"' if ref_first and k == 0 else ""
        tds = "".join(
            f'<td class="num{" bad" if "✗" in c else ""}">{_e(c)}</td>' if i >= numeric_from else f"<td>{_e(c)}</td>"
            for i, c in enumerate(cells)
        )
        trs.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def html(report: Report) -> str:
    figs = plots(report)
    parts = _summary_section(report)
    if report.devices:
        from . import report_devices

        parts += [
            "<h2>On the device</h2>",
            _table(report_devices.COLUMNS, report_devices.table(report), numeric_from=3),
            f"<p class='note'>{_e(report_devices.note(report).replace('*', ''))}</p>",
        ]
    parts += [
        "<h2>Accuracy vs latency</h2>",
        f"<img alt='top-1 vs p50 latency' src='{figs['tradeoff']}'>",
        "<h2>Latency distributions</h2>",
        f"<img alt='latency distributions' src='{figs['latency']}'>",
    ]
    if "per_class" in figs:
        parts += ["<h2>Per-class top-1 change</h2>", f"<img alt='per-class top-1 change' src='{figs['per_class']}'>"]
        parts.append(_per_class_table(report))
    parts += _flips_section(report)
    d, t = report.data, report.timing
    if d["undecodable"]:
        parts.append(
            f"<h2>Undecodable images ({len(d['undecodable'])}, counted as misses)</h2><ul>"
            + "".join(f"<li><code>{_e(u['image'])}</code> ({_e(u['label'])}): {_e(u['error'])}</li>" for u in d["undecodable"])
            + "</ul>"
        )
    if "first_pass_wall_seconds" in t:
        parts.append(f"<h2>Timing</h2><p>{_e(timing_sentence(report))}</p>")
    parts.append(
        f"<p class='note'>xception-edge {_e(report.xception_edge)}, report schema "
        f"{_e(REPORT_SCHEMA)} v{REPORT_VERSION}; numbers in report.json.</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def _summary_section(report: Report) -> list[str]:
    """The page's head, the run's one-line description, the summary table and its notes."""
    d, h, s = report.data, report.host, report.settings
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>xception-edge evaluation: {_e(d['source'])}</title><style>{_CSS}</style></head><body>",
        "<h1>xception-edge evaluation</h1>",
        f"<p>{d['images']} images from <code>{_e(d['source'])}</code> ({d['decoded']} decoded, {len(d['undecodable'])} "
        f"undecodable, counted as misses) &middot; model <code>{_e(report.model['spec'])}</code> &middot; "
        f"host {_e(h['cpu'])} ({_e(h['machine'])}, {h['cpu_count']} cores, int8 flags: {_e(', '.join(h['int8_flags']) or 'none')}) "
        f"&middot; latency: {s['runs']} runs after {s['warmup']} warm-up, batch 1 &middot; {_e(report.created)}</p>",
        _table(SUMMARY_COLUMNS, [summary_cells(r) for r in rows(report)], ref_first=True, numeric_from=3),
        f"<p class='note'><em>of fp32</em>: top-1 as a share of Keras fp32 top-1 (✗: below MLPerf's "
        f"{100 * s['mlperf_ratio']:.0f}%). <em>agreement</em>: share of images whose top-1 equals Keras's.</p>",
        f"<p class='note'>{_e(DROP_NOTE.replace('*', ''))}</p>",
    ]
    if notes(report):
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes(report)) + "</ul>")
    return parts


def _per_class_table(report: Report) -> str:
    ref = report.reference.per_class
    body = [
        [c, str(ref[c]["images"]), f"{100 * ref[c]['top1']:.1f}%"]
        + [f"{a.per_class[c]['drop_pp']:+.1f}" if c in a.per_class else "—" for a in report.artifacts]
        for c in ref
    ]
    return (
        "<div style='overflow-x:auto'>"
        + _table(["class", "images", "keras-fp32 top-1"] + [f"{a.name} Δpp" for a in report.artifacts], body)
        + "</div>"
    )


def _flips_section(report: Report) -> list[str]:
    flips = [
        [a.name, c, f["image"], f["keras"], f["artifact"]]
        for a in report.artifacts
        for c, fs in a.flips_per_class.items()
        for f in fs
    ]
    parts = [f"<h2>Flipped images ({len(flips)})</h2>"]
    if flips:
        parts.append(
            "<details><summary>top-1 differs from Keras fp32</summary>"
            + _table(["artifact", "class", "image", "Keras", "artifact"], flips, numeric_from=99)
            + "</details>"
        )
    return parts
