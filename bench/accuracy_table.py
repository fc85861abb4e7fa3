"""`make bench-accuracy`: int8 accuracy on the demo's val_hard (thin margins), every int8 target
side by side with each vendor's documented default recipe. A benchmark, not a test: it prints the
table and writes bench/accuracy.json and bench/accuracy.md.

Rows, per backend: the vendor's defaults (bench/vendor_defaults.py); our target with no
transform; with each transform of xception_edge.transforms.TRANSFORMS alone; and with all of
them (when there is more than one). Every model is calibrated on calibration/demo.txt (300 train
images) and scored on the same val_hard images against the same Keras predictions: top-1, drop
vs Keras with its 95% paired-bootstrap interval and McNemar's p (xception_edge.accuracy /
.stats), agreement with Keras's top-1. Our rows come from `xe.evaluate`; the vendor rows from
the same toolkit functions here. p50 latency of every model is measured side by side at the end:
one image, 2 threads, the toolkit's timing loop, rounds interleaved in a shuffled order, in a
fresh process that holds only the runtimes.

    .venv/bin/python bench/accuracy_table.py            # ~6 min on 2 busy cores
    .venv/bin/python bench/accuracy_table.py --quick    # fewer timed runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import results_sections  # noqa: E402
import vendor_defaults  # noqa: E402

THREADS = 2
SPLIT = "val_hard"
TARGETS = {  # our int8 target -> the vendor whose default it is compared with
    "arm64-litert-int8": "litert",
    "x86-openvino-int8": "openvino",
    "x86-onnxruntime-int8": "onnxruntime",
    "arm64-onnxruntime-int8": "onnxruntime",
}
BACKENDS = ("litert", "openvino", "onnxruntime")
GOAL = {"min_agreement": 0.97, "max_drop_pp": 0.3}


@dataclasses.dataclass
class Setup:
    """What every row shares: the demo, its calibration and val_hard images, Keras's predictions."""

    demo: object
    labels: list[str]
    labels_file: Path
    calibration_list: Path
    calib: np.ndarray
    data: object  # xception_edge.dataset.LabelledImages of val_hard
    images: np.ndarray
    keras_preds: dict[str, str]
    keras_top1: float


# ------------------------------------------------------------------ setup
def transform_variants() -> list[tuple[str, list[str]]]:
    """(row label, transforms): none, each transform alone, and all of them together."""
    from xception_edge.transforms import TRANSFORMS

    names = list(TRANSFORMS)
    variants = [("none", [])] + [(n, [n]) for n in names]
    if len(names) > 1:
        variants.append(("all", names))
    return variants


def calibration_images(list_file: Path, root: Path, spec) -> np.ndarray:
    from xception_edge.calibration import read_list
    from xception_edge.preprocess import load_images

    files = [e.path for e in read_list(list_file, root, root_hint="rebuild the demo")]
    calib, failed = load_images(files, spec)
    if failed:
        raise SystemExit(f"calibration images that do not decode: {failed[:3]}")
    return calib


def keras_predictions(model, images: np.ndarray, keys: list[str], labels: list[str]) -> dict[str, str]:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    probs = np.concatenate([fn(tf.constant(images[i : i + 32])).numpy() for i in range(0, len(images), 32)])
    return {k: labels[int(c)] for k, c in zip(keys, probs.argmax(-1))}


def setup(work: Path) -> tuple[Setup, object]:
    import keras

    from xception_edge.dataset import labelled_images
    from xception_edge.demo import DEMO, ensure_demo
    from xception_edge.demo_run import demo_calibration_list
    from xception_edge.preprocess import PreprocessSpec, load_images

    demo = ensure_demo(None, config=DEMO)
    labels = list(demo.labels)
    labels_file = work / "labels.txt"
    labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
    model = keras.models.load_model(demo.model)
    spec = PreprocessSpec(*model.input_shape[1:3])
    calib_list = demo_calibration_list()
    calib = calibration_images(calib_list, demo.data / "train", spec)
    data = labelled_images(demo.data / SPLIT, labels, require_labels=True)
    images, failed = load_images(data.files, spec)
    if failed:
        raise SystemExit(f"{SPLIT} images that do not decode: {failed[:3]}")
    keras_preds = keras_predictions(model, images, data.keys, labels)
    top1 = float(np.mean([keras_preds[k] == labels[t] for k, t in zip(data.keys, data.targets)]))
    s = Setup(demo, labels, labels_file, calib_list, calib, data, images, keras_preds, top1)
    return s, model


# ------------------------------------------------------------------ scoring (the toolkit's own code)
def score(probs: np.ndarray, s: Setup) -> dict:
    """top-1, drop vs Keras with its interval and McNemar's p, agreement: as evaluate scores a row."""
    from xception_edge.accuracy import accuracy_report, agreement, paired_drop

    keys, labels = s.data.keys, s.labels
    acc = accuracy_report(probs, np.array(s.data.targets, np.int64), labels)
    preds = {k: labels[int(c)] for k, c in zip(keys, probs.argmax(-1))}
    label_of = {k: labels[t] for k, t in zip(keys, s.data.targets)}
    agr = agreement(preds, s.keras_preds)
    paired = paired_drop(preds, s.keras_preds, label_of)
    return {
        "images": acc["images"],
        "top1": acc["top1"],
        "drop_pp": 100 * (acc["top1"] - s.keras_top1),
        "drop_ci_pp": paired["drop_ci_pp"],
        "mcnemar_p": paired["mcnemar_p"],
        "lost": paired["lost"],
        "gained": paired["gained"],
        "agreement": agr["agreement"],
        "flipped": len(agr["flipped"]),
    }


# ------------------------------------------------------------------ our targets
def convert_ours(s: Setup, out: Path, transforms: list[str]) -> dict:
    import xception_edge as xe

    results = xe.convert(
        s.demo.model, list(TARGETS), calibration=s.calibration_list, calibration_root=s.demo.data / "train",
        verify_data=s.demo.data / "val", labels=s.labels_file, out=out, force=True, transforms=transforms,
    )  # fmt: skip
    return {r.target: {"ok": r.ok, "error": r.error, "seconds": r.seconds} for r in results}


def evaluate_ours(s: Setup, artifacts: Path, report: Path, runs: int, warmup: int) -> dict:
    import xception_edge as xe

    rep = xe.evaluate(s.demo.model, artifacts, s.demo.data / SPLIT, report=report, runs=runs, warmup=warmup)
    if abs(rep.reference.top1 - s.keras_top1) > 1e-9:  # the vendor rows are scored against this script's Keras pass
        print(f"WARNING: Keras top-1 here {s.keras_top1:.4f} differs from evaluate's {rep.reference.top1:.4f}", flush=True)
    return {row.target: row for row in rep.artifacts}


def our_rows(s: Setup, work: Path, args) -> list[dict]:
    rows = []
    for label, transforms in transform_variants():
        out = work / "ours" / label
        print(f"== ours, transforms {label}: converting {len(TARGETS)} targets", flush=True)
        conversions = convert_ours(s, out, transforms)
        ok = [t for t, c in conversions.items() if c["ok"]]
        evaluated = evaluate_ours(s, out, work / "reports" / label, args.runs, args.warmup) if ok else {}
        for target, backend in TARGETS.items():
            rows.append(our_row(s, target, backend, label, transforms, out / target, conversions[target], evaluated))
    return rows


def our_row(s: Setup, target, backend, label, transforms, folder: Path, conversion: dict, evaluated: dict) -> dict:
    from xception_edge.targets import resolve_target

    default = list(resolve_target(target).quantization.transforms) == transforms
    row = {
        "backend": backend, "kind": "ours", "name": f"{target} [{label}]", "target": target, "profile_default": default,
        "transforms": transforms, "path": str(folder), "convert_seconds": round(conversion["seconds"], 1),
        "how": f"xe.convert(model, [{target!r}], transforms={transforms!r}, calibration=calibration/demo.txt, "
        f"verify_data=val) then xe.evaluate(model, artifacts, {SPLIT})",
    }  # fmt: skip
    if not conversion["ok"] or target not in evaluated:
        return {**row, "error": conversion["error"] or "not converted"}
    r = evaluated[target]
    fields = ("images", "top1", "drop_pp", "drop_ci_pp", "mcnemar_p", "lost", "gained", "agreement", "flipped")
    row |= {k: getattr(r, k) for k in fields}
    row |= {"size_bytes": r.size_bytes, "evaluate_p50_ms": r.p50_ms, "note": r.cpu_warning}
    return row


# ------------------------------------------------------------------ vendor defaults
def vendor_rows(s: Setup, model, work: Path) -> list[dict]:
    rows = []
    for backend in BACKENDS:
        print(f"== vendor default: {backend}", flush=True)
        try:
            path, seconds = vendor_defaults.build(backend, model, s.calib, work / "vendor" / backend)
            vm = vendor_defaults.open_model(backend, path, THREADS)
        except Exception as exc:  # a vendor recipe that fails is a row with its error
            rows.append({"backend": backend, "kind": "vendor", "name": f"vendor-{backend}-int8", "error": repr(exc)[:300]})
            continue
        row = {"backend": backend, "kind": "vendor", "name": vm.name, "target": None, "transforms": None}
        row |= {"path": str(path), "convert_seconds": round(seconds, 1), "size_bytes": vm.size_bytes()}
        row |= {"how": f"{vm.recipe}; run with {vm.runtime}"} | score(vm.predict(s.images), s)
        row["note"] = saturation_note(path) if backend == "onnxruntime" else None
        rows.append(row)
    return rows


def saturation_note(path: Path) -> str:
    """The toolkit's count of int8 weight pairs that can saturate x86 AVX2 (no VNNI) 16-bit sums."""
    import onnx

    from xception_edge.backends.onnxruntime.convert import u8s8_overflow_pairs
    from xception_edge.hostinfo import cpu_flags

    risk = u8s8_overflow_pairs(onnx.load(str(path)))
    vnni = {"avx512_vnni", "avx_vnni"} & set(cpu_flags())
    return (
        f"{risk['pairs']} of {risk['of']} int8 weight pairs can saturate the 16-bit sums of ORT's x86 int8 kernels "
        f"without VNNI (xception_edge's u8s8_overflow_pairs); this host has {'VNNI' if vnni else 'no VNNI'}"
    )


# ------------------------------------------------------------------ latency, side by side
def timed_models(rows: list[dict]) -> dict:
    """name -> (invoke, to its input, load ms, note) for every row that has a model."""
    from xception_edge.runtime import open_artifact
    from xception_edge.runtime.base import quantize

    models = {}
    for row in rows:
        if row["kind"] == "vendor":
            vm = vendor_defaults.open_model(row["backend"], Path(row["path"]), THREADS)
            models[row["name"]] = (vm.invoke, vm.to_input, vm.load_ms, None)
            continue
        t0 = time.perf_counter()
        rt = open_artifact(row["path"], threads=THREADS)
        load_ms = (time.perf_counter() - t0) * 1000
        to_input = lambda x, rt=rt: quantize(np.repeat(x, rt.batch_size, 0), rt.input_spec)  # noqa: E731
        models[row["name"]] = (rt.invoke, to_input, load_ms, rt.note)
    return models


def latency_in_child(rows: list[dict], x0: np.ndarray, work: Path, args) -> dict:
    """side_by_side_latency in a fresh process holding only the runtimes, away from what the
    conversions left behind (TensorFlow, NNCF and OpenVINO thread pools). OpenVINO's rounds still
    switch between ~0.7 and ~3 ms, every OpenVINO model alike, when other processes load the
    cores: hence the fastest round's p50 beside the p50 of every run."""
    import subprocess

    job = {
        "rows": [
            {k: r[k] for k in ("name", "kind", "backend", "path")} for r in rows if r["kind"] != "keras" and not r.get("error")
        ]
    }
    job |= {"runs": args.runs, "warmup": args.warmup, "rounds": args.rounds, "out": str(work / "latency.json")}
    (work / "latency-job.json").write_text(json.dumps(job))
    np.save(work / "x0.npy", x0)
    subprocess.run([sys.executable, __file__, "--latency-job", str(work / "latency-job.json")], check=True)
    return json.loads((work / "latency.json").read_text())


def run_latency_job(job_file: Path) -> None:
    job = json.loads(job_file.read_text())
    x0 = np.load(job_file.with_name("x0.npy"))
    latency = side_by_side_latency(timed_models(job["rows"]), x0, job["runs"], job["warmup"], job["rounds"])
    Path(job["out"]).write_text(json.dumps(latency))


def side_by_side_latency(models: dict, x0: np.ndarray, runs: int, warmup: int, rounds: int, seed: int = 0) -> dict:
    """Every model timed on one image, ``runs`` runs dealt into ``rounds`` rounds; each round runs
    every model (warm-up, then its share of the runs) in a fresh random order, so that load from
    other processes on the machine falls on all of them alike."""
    from xception_edge.latency import split_runs, summarize, time_invoke

    rng = np.random.default_rng(seed)
    names = list(models)
    inputs = {n: models[n][1](x0) for n in names}
    parts: dict[str, list[list[float]]] = {n: [] for n in names}
    first: dict[str, float] = {}
    for size in split_runs(runs, rounds):
        for i in rng.permutation(len(names)):
            name = names[i]
            f, samples = time_invoke(models[name][0], inputs[name], runs=size, warmup=warmup)
            first.setdefault(name, f)
            parts[name].append(samples)
    out = {}
    for n in names:
        every = [x for p in parts[n] for x in p]
        stats = summarize(every, warmup=warmup, threads=THREADS, load_ms=models[n][2], first_ms=first[n], rounds=tuple(parts[n]))
        out[n] = stats.to_dict() | {"note": models[n][3]}
    return out


# ------------------------------------------------------------------ the table
def finish_rows(rows: list[dict], latency: dict) -> None:
    """p50 and its interval from the side-by-side run, the ratio to the vendor's p50, the goal."""
    vendor_p50 = {r["backend"]: latency[r["name"]]["p50_ms"] for r in rows if r["kind"] == "vendor" and r["name"] in latency}
    for r in rows:
        lat = latency.get(r["name"])
        if lat is None:
            continue
        r["p50_ms"], r["p50_ci_ms"], r["round_p50_ms"] = lat["p50_ms"], lat["p50_ci_ms"], lat["round_p50_ms"]
        r["latency_note"] = lat["note"]
        if r["backend"] in vendor_p50 and not lat["note"]:
            r["p50_vs_vendor"] = lat["p50_ms"] / vendor_p50[r["backend"]]
        r["meets_goal"] = bool(r["agreement"] >= GOAL["min_agreement"] and r["drop_pp"] >= -GOAL["max_drop_pp"])


def _position(row: dict) -> tuple:
    """Backend, then Keras, the vendor's row, our targets in TARGETS order (each with its variants)."""
    targets = list(TARGETS)
    return (
        BACKENDS.index(row["backend"]) if row["backend"] in BACKENDS else -1,
        row["kind"] != "keras",
        row["kind"] != "vendor",
        targets.index(row["target"]) if row.get("target") in targets else -1,
    )


def ordered(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=_position)  # stable: variants stay in transform_variants() order


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return "—" if not ci else f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def table(rows: list[dict]) -> str:
    head = (
        "| backend | model | top-1 | Δ top-1 pp vs Keras [95% CI] | McNemar p | agreement | flips | p50 ms [95% CI] "
        "| fastest round p50 | p50 / vendor | agreement ≥ 97% and drop ≤ 0.3 pt |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['backend']} | {r['name']} | failed: {str(r['error'])[:80]} |" + " |" * 8)
            continue
        if r["kind"] == "keras":
            lines.append(f"| — | {r['name']} | {_pct(r['top1'])} | reference |" + " |" * 7)
            continue
        ci = r.get("p50_ci_ms")
        p50 = "—" if r.get("p50_ms") is None else f"{r['p50_ms']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        p50 += " †" if r.get("latency_note") else ""
        ratio = "—" if r.get("p50_vs_vendor") is None else f"{r['p50_vs_vendor']:.2f}"
        fastest = f"{min(r['round_p50_ms']):.2f}" if r.get("round_p50_ms") else "—"
        cells = [
            r["backend"], r["name"] + (" *" if r.get("profile_default") else ""), _pct(r["top1"]), f"{r['drop_pp']:+.1f} {_ci(r['drop_ci_pp'])}", f"{r['mcnemar_p']:.3g}",
            _pct(r["agreement"]), str(r["flipped"]), p50, fastest, ratio, "yes" if r.get("meets_goal") else "no",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    h = result["host"]
    out = [
        f"# int8 accuracy on the demo's {SPLIT}: our targets vs each vendor's defaults",
        "",
        f"Host: {h['cpu']}, {h['cpu_count']} CPUs, int8 flags {' '.join(h['int8_flags']) or 'none'}, "
        f"{h['machine']}, Python {h['python']}; {THREADS} threads everywhere. Versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        f"Data: {result['data']['images']} {SPLIT} images; Keras top-1 {_pct(result['data']['keras_top1'])}. Calibration: "
        f"{result['data']['calibration_images']} images of calibration/demo.txt (demo train split), for every model. "
        f"Goal: agreement ≥ {GOAL['min_agreement']:.0%} and drop ≤ {GOAL['max_drop_pp']} pt at unchanged latency.",
        f"Latency: {result['settings']['runs']} timed runs per model on one image after {result['settings']['warmup']} "
        f"warm-up runs, in {result['settings']['rounds']} interleaved rounds (shuffled order), every model in one fresh process; "
        "p50 with its 95% interval. "
        f"Wall time {result['wall_seconds'] / 60:.1f} min{' (--quick)' if result['settings']['quick'] else ''}.",
        "Transform rows: none, each of xception_edge.transforms.TRANSFORMS alone, and all together when there are "
        f"several (now: {', '.join(label for label, _ in result['transform_variants'])}).",
        "",
        table(result["rows"]),
        "",
        "\\* the target profile's own transforms (targets/*.toml `[quantization] transforms`, what "
        "`xe.convert(transforms=None)` applies), as read at this run.  ",
        "† not the kernels the target runs on its device: this artifact runs here as its unfused QDQ reference "
        "(see its note below); its p50 is not comparable.",
        "",
        "## How each row was made",
        "",
    ]
    for r in result["rows"]:
        note, extra = r.get("note") or "", r.get("latency_note") or ""
        note = "; ".join(filter(None, [note, extra if extra not in note else ""]))
        out.append(f"- **{r['name']}**: {r.get('how', '')}" + (f" Note: {note}" if note else ""))
    out += ["", "## Reproduce", "", "```sh", *result["commands"], "```", ""]
    return "\n".join(out)


def versions() -> dict:
    import importlib.metadata as md

    pkgs = ("xception-edge", "tensorflow", "keras", "ai-edge-litert", "openvino", "nncf", "onnxruntime", "tf2onnx", "onnx")
    return {p: md.version(p) for p in pkgs}


# ------------------------------------------------------------------ main
def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed runs (10 in 2 rounds) for a fast check")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per model (default 100)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved latency rounds (default 10)")
    ap.add_argument("--work", type=Path, default=HERE / "out" / "accuracy", help="artifacts and reports (scratch)")
    ap.add_argument("--json", type=Path, default=HERE / "accuracy.json")
    ap.add_argument("--md", type=Path, default=HERE / "accuracy.md")
    ap.add_argument("--latency-job", type=Path, help=argparse.SUPPRESS)  # the child process of latency_in_child
    args = ap.parse_args()
    if args.quick:
        args.runs, args.warmup, args.rounds = 10, 2, 2
    return args


def main() -> None:
    args = parse_args()
    if args.latency_job:
        return run_latency_job(args.latency_job)
    t_start = time.perf_counter()
    from xception_edge.hostinfo import host

    args.work.mkdir(parents=True, exist_ok=True)
    print(f"host: {host()['cpu']}, int8 flags {host()['int8_flags']}, {THREADS} threads", flush=True)
    s, model = setup(args.work)
    keras_row = {"backend": "—", "kind": "keras", "name": "keras-fp32", "top1": s.keras_top1, "how": "the Keras model itself"}
    vendors = vendor_rows(s, model, args.work)
    rows = ordered([keras_row, *vendors, *our_rows(s, args.work, args)])
    print(f"== latency, side by side: {args.runs} runs x {len(rows) - 1} models in {args.rounds} rounds", flush=True)
    latency = latency_in_child(rows, s.images[:1], args.work, args)
    finish_rows(rows, latency)
    result = {
        "schema": "xception-edge/bench-accuracy",
        "schema_version": 1,
        "host": host(),
        "versions": versions(),
        "threads": THREADS,
        "settings": {"runs": args.runs, "warmup": args.warmup, "rounds": args.rounds, "quick": args.quick},
        "data": {"split": SPLIT, "images": len(s.data.files), "keras_top1": s.keras_top1, "calibration_images": len(s.calib)},
        "goal": GOAL,
        "transform_variants": transform_variants(),
        "rows": rows,
        "wall_seconds": time.perf_counter() - t_start,
        "commands": ["make bench-accuracy", ".venv/bin/python bench/accuracy_table.py" + (" --quick" if args.quick else "")],
    }
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.md.write_text(markdown(result))
    if args.md == HERE / "accuracy.md":  # the default run: also bench/results.md's accuracy section
        results_sections.put_section("int8-accuracy", re.sub(r"^(#+) ", r"#\1 ", markdown(result), flags=re.M))
    print("\n" + table(rows) + f"\n\nwall time {result['wall_seconds'] / 60:.1f} min; wrote {args.json} and {args.md}")


if __name__ == "__main__":
    main()
