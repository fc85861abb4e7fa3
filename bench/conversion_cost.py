"""`make bench` (conversion cost, #13): full-size Xception (299 px, 1000 classes, random weights),
300 calibration images. Wall time and peak memory of `xception-edge convert` for the three int8
targets and for `--target all`, next to each vendor's documented default recipe run by hand, each
in its own process (bench/vendor_defaults.py: TFLiteConverter full-int8, SavedModel ->
openvino.convert_model -> nncf.quantize, Keras's ONNX export (tf2onnx) -> quantize_static), in
the same run. A benchmark, not a test: it prints the table and writes bench/conversion.json and
the conversion-cost section of bench/results.md.

Peak memory is the whole process tree's: the sum of VmRSS over the process and every descendant,
sampled every 50 ms from /proc (``tree_peak``), and, from wait4, the largest single process's
ru_maxrss (which a sample can miss, so the larger of the two is reported).

    .venv/bin/python bench/conversion_cost.py            # ~25 min on 2 cores
    .venv/bin/python bench/conversion_cost.py --skip-all # without the --target all run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import results_sections  # bench/results_sections.py (this folder is the script's own)

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
INT8 = ["arm64-litert-int8", "x86-openvino-int8", "x86-onnxruntime-int8"]
GOAL = {"all_peak_gb": 4.0, "int8_seconds": 240}
VENDORS = {  # the int8 target each vendor recipe corresponds to
    "litert": "TFLiteConverter int8 (from_keras_model, representative_dataset, TFLITE_BUILTINS_INT8)",
    "openvino": "SavedModel export -> openvino.convert_model -> nncf.quantize (defaults)",
    "onnxruntime": "Keras ONNX export (tf2onnx) -> quant_pre_process -> quantize_static (defaults)",
}


def _tree_rss_kb(root: int) -> int:
    """VmRSS (kB) of ``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as f:
                kb = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = kb
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def tree_peak(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; its wall time, peak RSS of its process tree (sampled) and of its largest process
    (wait4), and per stage (each line the command prints, until the next) the tree's peak: a
    memory profile by stage, read from the command's own progress lines."""
    peak, stage_peak = [0], [0]
    stages: list[dict] = []
    with open(log, "w") as out:
        t0 = time.perf_counter()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, errors="replace")
        done = threading.Event()

        def sample():
            while not done.is_set():
                kb = _tree_rss_kb(p.pid)
                peak[0], stage_peak[0] = max(peak[0], kb), max(stage_peak[0], kb)
                done.wait(0.05)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        label, started = "start (imports, loading the model)", 0.0
        for line in p.stdout:
            out.write(line)
            now = time.perf_counter() - t0
            stages.append({"stage": label, "seconds": round(now - started, 1), "peak_mb": round(stage_peak[0] / 1024)})
            label, started, stage_peak[0] = line.strip()[:120], now, _tree_rss_kb(p.pid)
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        thread.join()
        stages.append({"stage": label, "seconds": round(seconds - started, 1), "peak_mb": round(stage_peak[0] / 1024)})
    code = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if code else []
    return {
        "seconds": round(seconds, 1),
        "tree_peak_mb": round(max(peak[0], usage.ru_maxrss) / 1024),
        "largest_process_mb": round(usage.ru_maxrss / 1024),
        "exit": code,
        "error": tail[0] if tail else None,
        "stages": _merge_stages(stages),
    }


def _merge_stages(stages: list[dict]) -> list[dict]:
    """Progress lines of one stage ("calibrating: 75/300", "...: done in 9s") as one entry."""
    out: list[dict] = []
    for s in stages:
        key = s["stage"].split(":")[0].split(" ...")[0]
        if out and out[-1]["stage"] == key:
            out[-1]["seconds"] = round(out[-1]["seconds"] + s["seconds"], 1)
            out[-1]["peak_mb"] = max(out[-1]["peak_mb"], s["peak_mb"])
        else:
            out.append({**s, "stage": key})
    return out


def calibration_images(root: Path) -> Path:
    from xception_edge.demo.data import make_dataset

    if not (root / "train").is_dir():
        make_dataset(root, train_per_class=25, val_per_class=1, image_size=320)
    return root / "train"


def ours(targets: list[str], out: Path, cal: Path, labels: Path, name: str) -> dict:
    cmd = [str(BIN / "xception-edge"), "convert", "--model", "keras:xception", "--weights", "none", "--labels", str(labels)]
    for t in targets:
        cmd += ["--target", t]
    cmd += ["--calibration", str(cal), "--num-calibration", "300", "--out", str(out / name), "--force"]
    print(f"== ours: convert {' '.join(targets) if len(targets) < 5 else 'all'}", flush=True)
    row = {"who": "xception-edge", "what": f"convert --target {' --target '.join(targets) if len(targets) < 5 else 'all'}"}
    row.update(tree_peak(cmd, out / f"{name}.log"))
    print(f"   {row['seconds']} s, peak {row['tree_peak_mb']} MB (largest process {row['largest_process_mb']} MB)", flush=True)
    return row


VENDOR_CODE = """
import os, sys, time, json
sys.path.insert(0, {here!r})
import numpy as np, keras
import vendor_defaults
from xception_edge.preprocess import PreprocessSpec, list_images, load_images
files = list_images({cal!r})
files = sorted(files)[:300]
calib, failed = load_images(files, PreprocessSpec(299, 299))
model = keras.applications.Xception(weights=None)
out = {out!r}
os.makedirs(out, exist_ok=True)
from pathlib import Path
vendor_defaults.BUILD[{backend!r}](model, calib, Path(out))
"""


def vendor(backend: str, out: Path, cal: Path) -> dict:
    code = VENDOR_CODE.format(here=str(HERE), cal=str(cal), out=str(out / f"vendor-{backend}"), backend=backend)
    print(f"== by hand: {backend} ({VENDORS[backend]})", flush=True)
    row = {"who": f"{backend} by hand", "what": VENDORS[backend]}
    row.update(tree_peak([sys.executable, "-c", code], out / f"vendor-{backend}.log"))
    print(f"   {row['seconds']} s, peak {row['tree_peak_mb']} MB", flush=True)
    return row


def markdown(result: dict) -> str:
    h = result["host"]
    rows = result["rows"]
    lines = [
        "# Conversion cost: full-size Xception (299 px, 1000 classes), 300 calibration images",
        "",
        f"Host: {h['cpu']}, {h.get('cpu_count', '?')} CPUs, int8 flags {h['int8_flags']}; one run, side by side. "
        f"Goal (#13): `--target all` at peak <= {GOAL['all_peak_gb']:g} GB for the whole process tree; the three int8 "
        f"targets in <= {GOAL['int8_seconds'] // 60} min.",
        "",
        "Process tree: the sum of VmRSS over the process and its children, sampled every 50 ms (pages a forked "
        "child shares with its parent count twice); largest process: wait4's ru_maxrss.",
        "",
        "| who | what | wall s | peak RSS MB (process tree) | largest process MB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        err = f" (failed: {r['error']})" if r.get("error") else ""
        lines.append(f"| {r['who']} | {r['what']}{err} | {r['seconds']} | {r['tree_peak_mb']} | {r['largest_process_mb']} |")
    s = result["summary"]
    lines += [
        "",
        f"- The three int8 targets: xception-edge {s['ours_int8_seconds']} s and {s['ours_int8_peak_mb']} MB; the vendors' "
        f"recipes by hand, one after the other: {s['vendors_seconds']} s in all, {s['vendors_peak_mb']} MB at the largest "
        f"(time ratio ours / by hand {s['time_ratio']}).",
    ]
    if s.get("all_seconds") is not None:
        lines.append(f"- `--target all`: {s['all_seconds']} s, peak {s['all_peak_mb']} MB.")
    for r in rows:
        if r["who"] == "xception-edge" and r.get("stages"):
            top = sorted(r["stages"], key=lambda s: -s["peak_mb"])[:6]
            slow = sorted(r["stages"], key=lambda s: -s["seconds"])[:6]
            lines += ["", f"Where `{r['what']}` spends (stages by its progress lines):", ""]
            lines += ["- peak memory: " + "; ".join(f"{s['stage']} {s['peak_mb']} MB" for s in top)]
            lines += ["- time: " + "; ".join(f"{s['stage']} {s['seconds']} s" for s in slow)]
    lines += ["", "Reproduce: `make bench` (or `.venv/bin/python bench/conversion_cost.py`)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "out" / "conversion")
    ap.add_argument("--skip-all", action="store_true", help="skip the --target all run")
    ap.add_argument("--skip-vendors", action="store_true")
    args = ap.parse_args()
    from xception_edge.hostinfo import host

    args.out.mkdir(parents=True, exist_ok=True)
    cal = calibration_images(HERE / "out" / "calibration")
    labels = args.out / "labels.txt"
    labels.write_text("".join(f"class_{i}\n" for i in range(1000)))
    print(f"host: {host()['cpu']}, int8 flags {host()['int8_flags']}", flush=True)
    t0 = time.perf_counter()
    rows = [ours(INT8, args.out, cal, labels, "int8")]
    if not args.skip_vendors:
        rows += [vendor(b, args.out, cal) for b in VENDORS]
    if not args.skip_all:
        rows.append(ours(["all"], args.out, cal, labels, "all"))
    vend = [r for r in rows if r["who"].endswith("by hand")]
    summary = {
        "ours_int8_seconds": rows[0]["seconds"],
        "ours_int8_peak_mb": rows[0]["tree_peak_mb"],
        "vendors_seconds": round(sum(r["seconds"] for r in vend), 1) if vend else None,
        "vendors_peak_mb": max((r["tree_peak_mb"] for r in vend), default=None),
        "time_ratio": round(rows[0]["seconds"] / sum(r["seconds"] for r in vend), 2) if vend else None,
        "all_seconds": rows[-1]["seconds"] if not args.skip_all else None,
        "all_peak_mb": rows[-1]["tree_peak_mb"] if not args.skip_all else None,
    }
    result = {
        "schema": "xception-edge/bench-conversion",
        "schema_version": 1,
        "host": host(),
        "goal": GOAL,
        "rows": rows,
        "summary": summary,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    (HERE / "conversion.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (HERE / "conversion.md").write_text(md)
    import re

    results_sections.put_section("conversion-cost", re.sub(r"^(#+) ", r"#\1 ", md, flags=re.M))
    print("\n" + md)


if __name__ == "__main__":
    main()
