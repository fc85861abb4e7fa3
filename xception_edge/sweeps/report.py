"""sweep.json, sweep.md (tables) and sweep.html (the tables and a plot of top-1 and agreement
against calibration size, spread over seeds), each written atomically; and the terminal summary."""

from __future__ import annotations

import json
from pathlib import Path

SUMMARY_COLUMNS = ["method", "transforms", "size", "seeds", "top-1 mean [min, max]", "spread pp [95% CI]"]
SUMMARY_COLUMNS += ["agreement mean [min, max]", "stable"]
CELL_COLUMNS = ["cell", "method", "transforms", "size", "seed", "top-1", "Δ top-1 pp [95% CI]", "agreement"]
CELL_COLUMNS += ["model sha256", "artifact"]
_SUMMARY_RIGHT = range(2, 8)
_CELL_RIGHT = range(3, 8)


def _tr(transforms: list[str]) -> str:
    return "+".join(transforms) or "none"


def _range(s: dict | None) -> str:
    return "—" if s is None else f"{s['mean']:.2f}% [{s['min']:.2f}, {s['max']:.2f}]"


def summary_cells(s: dict) -> list[str]:
    ci = s["spread_ci_pp"]
    spread = "—" if ci is None else f"{s['spread_pp']:.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    stable = "yes" if s["stable"] else "no" + ("" if s["within_noise"] else " (spread)") + ("" if s["not_worse"] else " (worse)")
    seeds = f"{s['converted']}/{s['seeds']}"
    return [
        str(s["method"]),
        _tr(s["transforms"]),
        str(s["size"]),
        seeds,
        _range(s["top1"]),
        spread,
        _range(s["agreement"]),
        stable,
    ]


def cell_cells(c: dict) -> list[str]:
    head = [c["name"], str(c["method"]), _tr(c["transforms"]), str(c["size"]), str(c["seed"])]
    if not c["ok"]:
        return head + ["FAILED", c["error"] or "", "—", "—", "—"]
    ci = c.get("drop_ci_pp")
    drop = f"{c['drop_pp']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
    return head + [f"{100 * c['top1']:.2f}%", drop, f"{100 * c['agreement']:.2f}%", c["model_sha256"][:12], c["artifact"]]


def recommendation_text(sweep: dict, *, rule: bool = True) -> str:
    r = sweep["recommendation"]
    head = f"Recommended calibration size: {r['size']}" if r["size"] is not None else "No recommendation"
    how = f" Rule: {r['rule']}." if rule else ""
    return f"{head}; {r['reason']}.{how} Noise: {r['noise']}."


def _header(sweep: dict) -> str:
    t, v, ref = sweep["target"], sweep["validation"], sweep["reference"]
    return (
        f"Target {t['name']} ({t['backend']}) from model `{sweep['model']['spec']}`; calibration images from "
        f"`{sweep['calibration']['source']}` ({sweep['calibration']['images']}); {v['images']} validation images from "
        f"`{v['source']}`, Keras fp32 top-1 {100 * ref['top1']:.2f}%; {len(sweep['cells'])} cells on "
        f"{sweep['executor']['kind']}."
    )


def markdown(sweep: dict) -> str:
    lines = [f"# xception-edge sweep: {sweep['target']['name']}", "", _header(sweep), ""]
    lines += _md_table(SUMMARY_COLUMNS, [summary_cells(s) for s in sweep["summary"]], _SUMMARY_RIGHT)
    lines += ["", recommendation_text(sweep), "", "## Cells", ""]
    lines += _md_table(CELL_COLUMNS, [cell_cells(c) for c in sweep["cells"]], _CELL_RIGHT)
    return "\n".join(lines) + "\n"


def _md_table(header: list[str], body: list[list[str]], right) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    rows = [header, align, *body]
    return ["| " + " | ".join(str(x).replace("|", "\\|") for x in r) + " |" for r in rows]


def plot(sweep: dict) -> str:
    """Top-1 and agreement against calibration size (log scale): per method and transforms the mean
    over seeds, a band from the lowest to the highest seed, and every seed's point. A PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullLocator

    from ..report_html import _png

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    groups: dict = {}
    for s in sweep["summary"]:
        groups.setdefault((s["method"], _tr(s["transforms"])), []).append(s)
    for k, ((method, tr), sizes) in enumerate(groups.items()):
        colour = f"C{k % 10}"
        for ax, metric in zip(axes, ("top1", "agreement")):
            pts = [(s["size"], s[metric]) for s in sizes if s[metric] is not None]
            if not pts:
                continue
            x = [p[0] for p in pts]
            ax.plot(x, [p[1]["mean"] for p in pts], "-o", color=colour, label=f"{method}, {tr}", ms=4)
            ax.fill_between(x, [p[1]["min"] for p in pts], [p[1]["max"] for p in pts], color=colour, alpha=0.18, lw=0)
            seeds = [
                (c["size"], 100 * c[metric])
                for c in sweep["cells"]
                if c["ok"] and (c["method"], _tr(c["transforms"])) == (method, tr)
            ]
            ax.scatter([p[0] for p in seeds], [p[1] for p in seeds], color=colour, s=10, alpha=0.6)
    size, sizes = sweep["recommendation"]["size"], sweep["grid"]["size"]
    for ax, title in zip(axes, ("top-1 (%)", "agreement with Keras (%)")):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.margins(x=0.08)
        ax.set_xlabel("calibration images")
        ax.set_title(f"{title}: mean over seeds, band min-max")
        if size is not None:
            ax.axvline(size, color="#888", ls=":", lw=1, label=f"recommended: {size}")
        ax.grid(alpha=0.3)
    axes[0].axhline(100 * sweep["reference"]["top1"], color="#222", ls="--", lw=1, label="Keras fp32")
    axes[0].legend(fontsize=8)
    return _png(fig)


def html(sweep: dict) -> str:
    from ..report_html import _CSS, _e, _table

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>xception-edge sweep: {_e(sweep['target']['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>xception-edge sweep: {_e(sweep['target']['name'])}</h1>",
        f"<p>{_e(_header(sweep).replace('`', ''))}</p>",
        f"<img alt='top-1 and agreement against calibration size' src='{plot(sweep)}'>",
        _table(SUMMARY_COLUMNS, [summary_cells(s) for s in sweep["summary"]], numeric_from=2),
        f"<p><strong>{_e(recommendation_text(sweep))}</strong></p>",
        "<h2>Cells</h2>",
        _table(CELL_COLUMNS, [cell_cells(c) for c in sweep["cells"]], numeric_from=5),
        f"<p class='note'>xception-edge {_e(sweep['xception_edge'])}; numbers in sweep.json.</p></body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_sweep(sweep: dict, folder: Path) -> dict[str, Path]:
    from ..artifact import atomic_write_text

    folder = Path(folder)
    paths = {"json": folder / "sweep.json", "markdown": folder / "sweep.md", "html": folder / "sweep.html"}
    atomic_write_text(paths["html"], html(sweep))
    atomic_write_text(paths["markdown"], markdown(sweep))
    files = {k: str(v) for k, v in paths.items()}
    atomic_write_text(paths["json"], json.dumps({**sweep, "files": files}, indent=1) + "\n")
    return paths


def print_sweep(sweep: dict) -> None:
    from rich.table import Table

    from ..tables import Console

    t = Table(title=f"Sweep of {sweep['target']['name']}: {sweep['validation']['images']} validation images")
    for i, col in enumerate(SUMMARY_COLUMNS):
        t.add_column(col, justify="left" if i < 2 else "right")
    for s in sweep["summary"]:
        t.add_row(*summary_cells(s))
    con = Console()
    con.print(t)
    con.print(recommendation_text(sweep, rule=False), highlight=False)
    con.print(f"sweep: {sweep['files']['html']} (also sweep.md, sweep.json)", highlight=False)
