"""inspect's outputs: a console table per artifact, inspect.json, inspect.md, and inspect.html
with a plot of SQNR along the network per backend (the layers to blame marked)."""

from __future__ import annotations

import html as _html
import json
from pathlib import Path

from ..artifact import atomic_write_text
from . import transforms_table

COLUMNS = ("rank", "layer", "type", "SQNR dB", "lost here dB", "own dB", "MAC share", "node")


def _f(x, spec=".1f") -> str:
    return "—" if x is None else format(x, spec)


def cells(rank: int, e: dict) -> list[str]:
    return [
        str(rank),
        e["layer"] or "?",
        e["kind"],
        _f(e["sqnr_db"]),
        _f(e["added_db"]),
        _f(e["own_sqnr_db"]),
        f"{100 * e['mac_share']:.2f}%",
        e["node"][:60],
    ]


def worst(a: dict, n: int) -> list[dict]:
    return a["layers"][:n]


def print_inspect(result: dict, top: int) -> None:
    from rich.table import Table

    from ..tables import Console

    con = Console()
    for a in result["artifacts"]:
        t = Table(
            title=f"{a['target']}: worst {min(top, len(a['layers']))} of {len(a['layers'])} layers by SQNR "
            f"({a['images']} images; {a['tool']})"
        )
        for i, col in enumerate(COLUMNS):
            t.add_column(col, justify="right" if i in (0, 3, 4, 5, 6) else "left")
        for i, e in enumerate(worst(a, top), 1):
            t.add_row(*cells(i, e))
        con.print(t)
        con.print(
            f"  • most harmful (most noise added; kept in float first by --max-drop): {', '.join(a['blame'][:5]) or '—'}",
            highlight=False,
        )
        if a["float_layers"]:
            con.print(f"  • kept in float by the profile: {', '.join(a['float_layers'])}", highlight=False)
        if a["unmatched_weighted_layers"]:
            con.print(f"  • not matched to a {a['backend']} op: {', '.join(a['unmatched_weighted_layers'])}", highlight=False)


def markdown(result: dict, top: int) -> str:
    lines = [
        f"# Per-layer quantization error: {result['model']}",
        "",
        f"Calibration: `{result['calibration']}`. SQNR = 10·log10(Σfp32² / Σ(fp32 − int8)²) at each layer's output, "
        "both models fed the same images; *lost here* = SQNR at the layer's input minus at its output; "
        "*own* = the layer's error on its own, from the backend's tool. The most harmful layers add the most "
        "noise relative to their signal: the larger of the noise added across the layer and its own.",
        "",
    ]
    for a in result["artifacts"]:
        lines += [
            f"## {a['target']} ({a['backend']})",
            "",
            f"{a['images']} images, {a['tool']}, {a['seconds']} s.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(i, e)) + " |" for i, e in enumerate(worst(a, top), 1)]
        lines += [
            "",
            f"Most harmful layers (kept in float first by `convert --max-drop`): {', '.join(a['blame'][:5]) or '—'}",
            "",
        ]
        lines += transforms_table.markdown(a, top)
    return "\n".join(lines) + "\n"


def plot(result: dict, marked: int = 3) -> str:
    """SQNR per layer along the network, one panel per artifact (same x: the Keras layer order);
    depthwise layers dotted, the ``marked`` most harmful layers circled and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report_html import backend_colours, _label_points, _png

    colours = backend_colours()
    arts = [a for a in result["artifacts"] if any(e["order"] < 10**9 for e in a["layers"])]
    fig, axes = plt.subplots(len(arts), 1, figsize=(11, 2.3 * len(arts) + 0.6), sharex=True, squeeze=False)
    for ax, a in zip(axes[:, 0], arts):
        pts = sorted((e for e in a["layers"] if e["order"] < 10**9), key=lambda e: e["order"])
        colour = colours.get(a["backend"], "#444")
        ax.plot([e["order"] for e in pts], [e["sqnr_db"] for e in pts], "-", color=colour, lw=1.3)
        dw = [e for e in pts if e["kind"] == "depthwise"]
        ax.plot([e["order"] for e in dw], [e["sqnr_db"] for e in dw], ".", color=colour, ms=4)
        bad = a["blame"][:marked]
        worst = {}
        for e in pts:  # each blamed layer at its worst part
            layer = (e["layer"] or "").split("/")[0]
            if layer in bad and (layer not in worst or e["sqnr_db"] < worst[layer]["sqnr_db"]):
                worst[layer] = e
        ax.plot([e["order"] for e in worst.values()], [e["sqnr_db"] for e in worst.values()], "o", mfc="none", mec="#c00", ms=9)
        ax.set_ylabel("SQNR dB")
        ax.set_title(f"{a['target']} ({a['backend']})", fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        _label_points(fig, ax, [(e["order"], e["sqnr_db"], layer) for layer, e in worst.items()])
    axes[-1, 0].set_xlabel("layer (network order)")
    fig.suptitle(
        f"SQNR vs fp32 along the network (higher is better; dots: depthwise; circled: the {marked} most harmful layers)",
        fontsize=10,
    )
    fig.tight_layout()
    return _png(fig)


def html(result: dict, top: int) -> str:
    from ..report_html import _CSS

    e = _html.escape
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>inspect: {e(result['model'])}</title><style>{_CSS}</style>",
        f"<h1>Per-layer quantization error</h1><p class='note'>Model <code>{e(result['model'])}</code>, calibration "
        f"<code>{e(result['calibration'])}</code>, host {e(str(result['host'].get('cpu', '')))}.</p>",
        f"<img alt='SQNR along the network' src='{plot(result)}'>",
    ]
    for a in result["artifacts"]:
        parts.append(f"<h2>{e(a['target'])} ({e(a['backend'])})</h2><p class='note'>{a['images']} images; {e(a['tool'])}.</p>")
        parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr>")
        for i, row in enumerate(worst(a, top), 1):
            parts.append(
                "<tr>"
                + "".join(f"<td class='{'num' if j in (0, 3, 4, 5, 6) else ''}'>{e(c)}</td>" for j, c in enumerate(cells(i, row)))
                + "</tr>"
            )
        parts.append(f"</table><p>Most harmful: {e(', '.join(a['blame'][:5]) or '—')}</p>")
        parts.append(transforms_table.html(a, top))
    return "\n".join(parts) + "\n"


def write_inspect(result: dict, folder: Path, top: int) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "inspect.json", "markdown": folder / "inspect.md", "html": folder / "inspect.html"}
    atomic_write_text(paths["html"], html(result, top))
    atomic_write_text(paths["markdown"], markdown(result, top))
    atomic_write_text(paths["json"], json.dumps({**result, "files": {k: str(v) for k, v in paths.items()}}, indent=1) + "\n")
    for p in paths.values():
        p.chmod(0o644)
    return paths
