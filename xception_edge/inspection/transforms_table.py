"""inspect's view of an artifact's pre-quantization transforms (its manifest's ``transforms``
table): per layer, the int8 error proxy's SQNR without and with the transform, i.e. the layer's
output with its input tensor and kernel fake-quantized as the backends do, before and after."""

from __future__ import annotations

import html as _html

COLUMNS = ("transform", "layer", "pair", "SQNR dB without", "SQNR dB with", "gain dB")


def summary(manifest) -> list[dict]:
    """One entry per transformed layer that has a measured proxy SQNR, largest gain first."""
    out = []
    for record in (manifest.transforms or {}).get("records") or []:
        for layer in record.get("layers") or []:
            before, after = layer.get("sqnr_db_before"), layer.get("sqnr_db_after")
            if isinstance(before, (int, float)) and isinstance(after, (int, float)):
                pair = layer.get("kind", "")
                if layer.get("next"):
                    pair += f" → {layer['next']}"
                out.append({"transform": record.get("name"), "layer": layer.get("layer"), "pair": pair,
                            "sqnr_db_before": before, "sqnr_db_after": after})  # fmt: skip
    return sorted(out, key=lambda e: e["sqnr_db_after"] - e["sqnr_db_before"], reverse=True)


def cells(e: dict) -> list[str]:
    gain = e["sqnr_db_after"] - e["sqnr_db_before"]
    return [
        str(e["transform"]),
        str(e["layer"]),
        e["pair"],
        f"{e['sqnr_db_before']:.1f}",
        f"{e['sqnr_db_after']:.1f}",
        f"{gain:+.1f}",
    ]


def markdown(a: dict, top: int) -> list[str]:
    rows = a.get("transforms") or []
    if not rows:
        return []
    lines = [
        f"Transforms before quantization: per-layer int8 error proxy without and with them ({len(rows)} layers, largest gain first):",
        "",
    ]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return lines + ["| " + " | ".join(cells(e)) + " |" for e in rows[:top]] + [""]


def html(a: dict, top: int) -> str:
    rows = a.get("transforms") or []
    if not rows:
        return ""
    e = _html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells(r)) + "</tr>" for r in rows[:top])
    return (
        f"<p>Transforms before quantization: per-layer int8 error proxy without and with them "
        f"({len(rows)} layers, largest gain first).</p><table><tr>{head}</tr>{body}</table>"
    )
