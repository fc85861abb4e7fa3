"""Benchmark (not a test): ONNX Runtime int8 QDQ options on this CPU, for choosing the x86 profile.

For each of {uint8, int8 activations} x {per-channel, per-tensor weights} x {reduce_range off, on}
it quantizes the demo model with the toolkit's own converter code (one calibration, shared),
then measures top-1 on `val` and `val_hard`, top-1 agreement with Keras, the estimated count
of weight pairs that can saturate the 16-bit sums of the x86 AVX2 (no VNNI) int8 kernels, and
batch-1 latency with the toolkit's runtime session settings. Latency runs interleave the
variants (shuffled every round) so that load from other processes hits them alike; it reports
the median over rounds of each round's median, and the median of the per-round ratios to fp32.

    .venv/bin/python bench/ort_int8_options.py                     # demo model, 300 calibration images
    .venv/bin/python bench/ort_int8_options.py --rounds 21 --json out.json
    .venv/bin/python bench/ort_int8_options.py --latency-model xception  # also full-size Xception (random weights) latency
    .venv/bin/python bench/ort_int8_options.py --emulate  # also accuracy on an emulated AVX2-only CPU (needs qemu-user)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from xception_edge import console  # noqa: E402
from xception_edge.calibration import build_calibration, open_source  # noqa: E402
from xception_edge.backends.onnxruntime.convert import OPSET, quantize_qdq, u8s8_overflow_pairs  # noqa: E402
from xception_edge.hostinfo import host  # noqa: E402
from xception_edge.model_io import load_source  # noqa: E402
from xception_edge.preprocess import PreprocessSpec, list_images, load_images  # noqa: E402
from xception_edge.backends.onnxruntime.runtime import make_session  # noqa: E402
from xception_edge.profiles import QuantSpec  # noqa: E402


def variants():
    for act, per_channel, rr in itertools.product(("uint8", "int8"), (True, False), (False, True)):
        name = f"{'u8' if act == 'uint8' else 's8'}-act {'per-channel' if per_channel else 'per-tensor '} rr={'on ' if rr else 'off'}"
        yield name, QuantSpec(activation_dtype=act, weight_dtype="int8", reduce_range=rr), per_channel


def split(root: Path, labels, spec: PreprocessSpec):
    files = list_images(root)
    x, failed = load_images(files, spec)
    assert not failed, failed
    return x, np.array([labels.index(f.parent.name) for f in files])


def run(session, x: np.ndarray, batch: int = 50) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def latency(sessions: dict, image: np.ndarray, rounds: int, iters: int, seed: int = 0) -> dict:
    """Interleaved: every round runs each variant `iters` times, in a fresh random order."""
    rng = np.random.default_rng(seed)
    names = list(sessions)
    per_round = {n: [] for n in names}
    for s in sessions.values():  # warm-up
        for _ in range(5):
            s.run(None, {s.get_inputs()[0].name: image})
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            s = sessions[names[i]]
            feed = {s.get_inputs()[0].name: image}
            t = []
            for _ in range(iters):
                t0 = time.perf_counter()
                s.run(None, feed)
                t.append(time.perf_counter() - t0)
            per_round[names[i]].append(float(np.median(t)) * 1e3)
    ref = np.array(per_round["fp32"])
    return {
        n: {
            "median_ms": float(np.median(v)),
            "ratio_to_fp32": float(np.median(np.array(v) / ref)),
            "spread_ms": [float(np.percentile(v, 10)), float(np.percentile(v, 90))],
        }
        for n, v in per_round.items()
    }


def quantize_all(src, calib, workdir: Path, threads: int) -> tuple[dict, dict, dict]:
    import onnx

    fp32 = src.export_onnx(workdir, OPSET)
    paths, sessions, risk = {"fp32": fp32}, {"fp32": make_session(fp32, threads)}, {"fp32": None}
    for i, (name, q, per_channel) in enumerate(variants()):
        out = workdir / f"variant{i}.onnx"
        quantize_qdq(fp32, out, calib, q, per_channel, workdir, name)
        risk[name] = u8s8_overflow_pairs(onnx.load(str(out)))
        paths[name], sessions[name] = out, make_session(out, threads)
    return paths, sessions, risk


def emulated_predictions(paths: dict, splits: dict, workdir: Path, cpu: str, threads: int) -> dict:
    """Top-1 of every model on every split, computed by ONNX Runtime inside `qemu-x86_64 -cpu CPU`
    (user-mode emulation: ONNX Runtime's kernel dispatch sees that CPU's CPUID, e.g. Haswell =
    AVX2 without VNNI or AVX-512), in a child process of this script."""
    import shutil
    import subprocess

    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("--emulate needs qemu-x86_64 (Debian/Ubuntu: apt-get install qemu-user)")
    job = workdir / "emulate"
    job.mkdir(exist_ok=True)
    np.savez(job / "inputs.npz", **{s: x for s, (x, _) in splits.items()})
    names = list(paths)
    (job / "models.json").write_text(json.dumps([str(paths[n]) for n in names]))
    cmd = [qemu, "-cpu", cpu, sys.executable, str(Path(__file__).resolve()), "--predict-dir", str(job), "--threads", str(threads)]
    console.info(f"running {len(names)} models under qemu-x86_64 -cpu {cpu} (slow: emulated)")
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    got = np.load(job / "top1.npz")
    return {n: {s: got[f"{i}_{s}"] for s in splits} for i, n in enumerate(names)}


def predict_dir(job: Path, threads: int) -> None:
    """Child mode (under qemu): top-1 of each model in models.json on each array of inputs.npz."""
    inputs = np.load(job / "inputs.npz")
    out = {}
    for i, path in enumerate(json.loads((job / "models.json").read_text())):
        sess = make_session(path, threads)
        for s in inputs.files:
            out[f"{i}_{s}"] = run(sess, inputs[s]).argmax(-1)
    np.savez(job / "top1.npz", **out)


def demo_bench(args) -> dict:
    from xception_edge.demo import ensure_demo

    d = ensure_demo()
    src = load_source(str(d.model))
    spec = PreprocessSpec(src.height, src.width)
    calib = build_calibration(open_source(d.data / "train"), spec, args.calibration, args.seed)
    labels = list(d.labels)
    splits = {s: split(d.data / s, labels, spec) for s in ("val", "val_hard")}
    keras_pred = {s: src.predict(x).argmax(-1) for s, (x, _) in splits.items()}
    emulated = None
    with tempfile.TemporaryDirectory(prefix="ort-bench-") as wd:
        paths, sessions, risk = quantize_all(src, calib, Path(wd), args.threads)
        rows = {"keras": {f"top1_{s}": float((keras_pred[s] == y).mean()) for s, (_, y) in splits.items()}}
        for name, sess in sessions.items():
            row = {"u8s8_overflow_pairs": risk[name]}
            for s, (x, y) in splits.items():
                top = run(sess, x).argmax(-1)
                row[f"top1_{s}"] = float((top == y).mean())
                row[f"agree_{s}"] = float((top == keras_pred[s]).mean())
            rows[name] = row
        console.info(f"latency: {args.rounds} rounds x {args.iters} runs, batch 1, {args.threads} threads, interleaved")
        lat = latency(sessions, splits["val"][0][:1], args.rounds, args.iters, args.seed)
        if args.emulate:
            top = emulated_predictions(paths, splits, Path(wd), args.emulate, args.threads)
            emulated = {
                n: {
                    **{f"top1_{s}": float((t[s] == splits[s][1]).mean()) for s in splits},
                    **{f"agree_{s}": float((t[s] == keras_pred[s]).mean()) for s in splits},
                }
                for n, t in top.items()
            }
    for name, v in lat.items():
        rows[name].update(v)
    return {
        "model": str(d.model),
        "input": [src.height, src.width],
        "calibration": len(calib),
        "rows": rows,
        "emulated": emulated,
    }


def xception_latency(args) -> dict:
    """Full-size Xception (299 px, random weights: latency only, accuracy is meaningless)."""
    import keras

    from xception_edge.demo import ensure_demo
    from xception_edge.model_io import KerasXceptionOptions

    keras.utils.set_random_seed(0)
    src = load_source("keras:xception", xception=KerasXceptionOptions(weights="none", input_size=299, num_classes=12))
    spec = PreprocessSpec(299, 299)
    calib = build_calibration(open_source(ensure_demo().data / "train"), spec, args.xception_calibration, args.seed)
    with tempfile.TemporaryDirectory(prefix="ort-bench-x-") as wd:
        _, sessions, risk = quantize_all(src, calib, Path(wd), args.threads)
        lat = latency(sessions, calib.images[:1], args.rounds, max(1, args.iters // 10), args.seed)
    return {
        "model": "keras.applications.Xception 299 (random weights)",
        "calibration": len(calib),
        "rows": {n: {**lat[n], "u8s8_overflow_pairs": risk[n]} for n in sessions},
    }


def table(result: dict) -> str:
    rows = result["rows"]
    acc = "top1_val" in next(iter(rows.values()))
    head = (
        "| variant | "
        + ("top-1 val | top-1 val_hard | agree val | agree val_hard | " if acc else "")
        + "p50 ms | ratio to fp32 | p10-p90 ms | overflow pairs |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        if "median_ms" not in r:  # the Keras reference
            lines.append(f"| {name} | {r['top1_val']:.1%} | {r['top1_val_hard']:.1%} |" + " |" * 6)
            continue
        risk = r["u8s8_overflow_pairs"]
        cells = [name]
        if acc:
            cells += [f"{r['top1_val']:.1%}", f"{r['top1_val_hard']:.1%}", f"{r['agree_val']:.1%}", f"{r['agree_val_hard']:.1%}"]
        cells += [
            f"{r['median_ms']:.2f}",
            f"{r['ratio_to_fp32']:.2f}",
            f"{r['spread_ms'][0]:.2f}-{r['spread_ms'][1]:.2f}",
            "-" if risk is None else f"{risk['pairs']} ({risk['fraction']:.1%})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=int, default=300, help="calibration images from the demo's train split")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=40, help="runs per variant per round (full-size: a tenth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-model", choices=("demo", "xception"), default="demo")
    ap.add_argument("--xception-calibration", type=int, default=32)
    ap.add_argument(
        "--emulate",
        metavar="QEMU_CPU",
        nargs="?",
        const="Haswell",
        help="also measure accuracy under qemu-x86_64 -cpu QEMU_CPU (default Haswell: AVX2, no VNNI)",
    )
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--predict-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.predict_dir:
        return predict_dir(args.predict_dir, args.threads)
    import onnxruntime

    h = host()
    out = {"host": h, "onnxruntime": onnxruntime.__version__, "threads": args.threads, "demo": demo_bench(args)}
    print(f"\nonnxruntime {onnxruntime.__version__}, {h['cpu']}, int8 flags {' '.join(h['int8_flags'])}, {args.threads} threads")
    print(f"\nDemo model ({out['demo']['input'][0]} px, calibration {out['demo']['calibration']} train images):\n")
    print(table(out["demo"]))
    if out["demo"]["emulated"]:
        print(f"\nThe same models under qemu-x86_64 -cpu {args.emulate} (ONNX Runtime picks that CPU's int8 kernels):\n")
        print("| variant | top-1 val | top-1 val_hard | agree val | agree val_hard |\n|---|---|---|---|---|")
        for n, r in out["demo"]["emulated"].items():
            print(f"| {n} | {r['top1_val']:.1%} | {r['top1_val_hard']:.1%} | {r['agree_val']:.1%} | {r['agree_val_hard']:.1%} |")
    if args.latency_model == "xception":
        out["xception"] = xception_latency(args)
        print(f"\nFull-size Xception latency (calibration {out['xception']['calibration']} images):\n")
        print(table(out["xception"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
