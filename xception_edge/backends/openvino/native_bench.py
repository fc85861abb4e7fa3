"""OpenVINO's own benchmark tool (`benchmark_app`) on an IR artifact, at the inference precision
the conversion recorded: what `bench/run_matrix.py` compares the toolkit's harness with."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

TOOL = "benchmark_app"


def latency(model: Path, manifest: dict, *, runs: int, threads: int, bin_dir: Path) -> tuple[str, float] | None:
    """(tool name, median latency in ms) of ``model``: one stream, ``threads`` threads, sync API."""
    precision = (manifest.get("conversion") or {}).get("cpu_inference_precision", "f32")
    out = subprocess.run(
        [
            str(bin_dir / TOOL),
            "-m",
            str(model),
            "-d",
            "CPU",
            "-hint",
            "none",
            "-nstreams",
            "1",
            "-nthreads",
            str(threads),
            "-niter",
            str(runs),
            "-api",
            "sync",
            "-infer_precision",
            precision,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Median:\s+([\d.]+) ms", out)
    return (TOOL, float(m.group(1))) if m else None
