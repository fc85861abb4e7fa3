"""LiteRT's own benchmark tool (`litert-benchmark`, from the ai-edge-litert package) on a .tflite
artifact: what `bench/run_matrix.py` compares the toolkit's harness with."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

TOOL = "litert-benchmark"


def latency(model: Path, manifest: dict, *, runs: int, threads: int, bin_dir: Path) -> tuple[str, float] | None:
    """(tool name, median latency in ms) of ``model`` with ``threads`` threads over ``runs`` runs."""
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "r.json"
        subprocess.run(
            [
                str(bin_dir / TOOL),
                "--model",
                str(model),
                "--num_threads",
                str(threads),
                "--num_runs",
                str(runs),
                "--warmup_runs",
                "5",
                "--result_json",
                str(res),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return TOOL, float(json.loads(res.read_text())["latency"]["median_ms"])
