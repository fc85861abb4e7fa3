"""`make bench`: full-size (299x299) Xception, batch 1, 2 threads, every built-in target plus
Keras fp32, in one run. A benchmark, not a test: it prints figures and writes
bench/results.json and bench/results.md.

Per target: conversion time and peak memory (each conversion in its own process, measured with
wait4), size, p50 latency with xception-edge's own harness (`bench`), speedup over Keras fp32,
and, where the backend's spec declares one (`native_bench`: LiteRT's `litert-benchmark`,
OpenVINO's `benchmark_app`), the vendor's own benchmark tool on the same artifact with the
harness/native ratio.

Weights are random (`keras:xception --weights none`: no ImageNet download here); latency does
not depend on them. Calibration: 300 images of the demo generator at 320 px.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import results_sections  # bench/results_sections.py (this folder is the script's own)

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
THREADS = 2


def convert(target: str, out: Path, cal: Path, labels: Path) -> dict:
    cmd = [
        str(BIN / "xception-edge"),
        "-q",
        "convert",
        "--model",
        "keras:xception",
        "--weights",
        "none",
        "--labels",
        str(labels),
        "--target",
        target,
        "--calibration",
        str(cal),
        "--num-calibration",
        "300",
        "--out",
        str(out),
        "--force",
        "--json",
        str(out / f".{target}.json"),
    ]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    err = p.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        return {"target": target, "error": err.strip().splitlines()[-1] if err.strip() else f"exit {status}"}
    res = json.loads((out / f".{target}.json").read_text())["results"][0]
    return {
        "target": target,
        "convert_seconds": round(seconds, 1),
        "convert_peak_rss_mb": round(usage.ru_maxrss / 1024),
        "size_mb": round(res["size_bytes"] / 1e6, 2),
        "error": None,
    }


def keras_latency(runs: int) -> float:
    code = f"""
import os, json, time; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
tf.config.threading.set_intra_op_parallelism_threads({THREADS}); tf.config.threading.set_inter_op_parallelism_threads(1)
m = keras.applications.Xception(weights=None)
x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, 299, 299, 3)).astype("float32"))
f = tf.function(lambda t: m(t, training=False))
for _ in range(5): f(x)
s = []
for _ in range({runs}):
    t = time.perf_counter(); f(x).numpy(); s.append((time.perf_counter() - t) * 1000)
print(json.dumps(float(np.median(s))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def native_latency(folder: Path, runs: int) -> tuple[str, float] | None:
    """The vendor's own benchmark tool on the artifact, where its backend's spec declares one."""
    from xception_edge import backends

    manifest = json.loads((folder / "manifest.json").read_text())
    tool = backends.get(manifest["backend"]).native_benchmark()
    if tool is None:
        return None
    return tool.latency(folder / manifest["model_file"], manifest, runs=runs, threads=THREADS, bin_dir=BIN)


def calibration_images(root: Path) -> Path:
    from xception_edge.demo.data import make_dataset

    if not (root / "train").is_dir():
        make_dataset(root, train_per_class=25, val_per_class=1, image_size=320)
    return root / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--targets", nargs="*", default=None)
    args = ap.parse_args()

    from xception_edge.benchmark import run_bench
    from xception_edge.hostinfo import host
    from xception_edge.targets import builtin_names

    args.out.mkdir(parents=True, exist_ok=True)
    cal = calibration_images(args.out / "calibration")
    labels = args.out / "labels.txt"
    labels.write_text("".join(f"class_{i}\n" for i in range(1000)))
    artifacts = args.out / "artifacts"
    targets = args.targets or builtin_names()

    print(f"host: {host()['cpu']}, int8 flags {host()['int8_flags']}, {THREADS} threads", flush=True)
    keras_ms = keras_latency(args.runs)
    print(f"keras-fp32: p50 {keras_ms:.1f} ms", flush=True)
    rows = []
    for t in targets:
        row = convert(t, artifacts, cal, labels)
        if row["error"] is None:
            res = run_bench(artifacts / t, runs=args.runs, warmup=5, threads=THREADS)
            row["p50_ms"] = round(res["latency"]["p50_ms"], 2)
            row["speedup_vs_keras"] = round(keras_ms / res["latency"]["p50_ms"], 2)
            native = native_latency(artifacts / t, args.runs)
            if native:
                row["native_tool"], row["native_p50_ms"] = native[0], round(native[1], 2)
                row["harness_over_native"] = round(res["latency"]["p50_ms"] / native[1], 3)
        print(json.dumps(row), flush=True)
        rows.append(row)

    results = {
        "schema": "xception-edge/bench-matrix",
        "schema_version": 1,
        "host": host(),
        "threads": THREADS,
        "runs": args.runs,
        "model": "keras.applications.Xception 299x299, random weights",
        "keras_fp32_p50_ms": round(keras_ms, 2),
        "targets": rows,
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results, keras_ms)
    results_sections.write_body(md, HERE / "results.md")  # keeps accuracy_table.py's section
    print("\n".join(md))


def markdown(results: dict, keras_ms: float) -> list[str]:
    """bench/results.md, line by line: the host, Keras fp32, then one table row per target."""
    rows = results["targets"]
    md = [
        f"# Full-size Xception (299x299), batch 1, {THREADS} threads",
        "",
        f"Host: {results['host']['cpu']} ({results['host']['machine']}), int8 flags: {', '.join(results['host']['int8_flags'])}",
        "",
        f"Keras fp32 p50: {keras_ms:.1f} ms",
        "",
        "| target | p50 ms | speedup vs Keras | size MB | convert s | convert peak RSS MB | native tool | native p50 ms | harness/native |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["error"]:
            md.append(f"| {r['target']} | failed: {r['error']} | | | | | | | |")
            continue
        md.append(
            f"| {r['target']} | {r['p50_ms']} | {r['speedup_vs_keras']}x | {r['size_mb']} | {r['convert_seconds']} | "
            f"{r['convert_peak_rss_mb']} | {r.get('native_tool', '—')} | {r.get('native_p50_ms', '—')} | {r.get('harness_over_native', '—')} |"
        )
    return md


if __name__ == "__main__":
    main()
