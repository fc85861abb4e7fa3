"""`xception-edge evaluate`: the Keras fp32 model and every artifact of a folder on the same
labelled images: top-1/top-5, the drop vs fp32, agreement and flips, per-class accuracy,
latency and size, written as report.json / report.md / report.html.

Images are decoded once (background threads fill one array while the first model consumes it in
order) and shared by every backend. Each finished result is stored under REPORT/results/,
keyed by what decides it, so `--resume` skips what an interrupted run already finished.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from . import __version__, console
from .accuracy import accuracy_report, agreement
from .artifact import output_lock
from .benchmark import cpu_mismatch, measure_latency, model_bytes
from .dataset import LabelledImages, labelled_images
from .errors import BadInput
from .hostinfo import host
from .preprocess import PreprocessSpec
from .evaluation_inputs import (  # noqa: F401  (Artifact, same_source_model: part of this module's interface)
    RESULTS,
    Artifact,
    _check_report_dir,
    _model_hash,
    discover_artifacts,
    float_layers,
    same_source_model,
    shared_preprocessing,
)
from .resultstore import ResultStore

SCHEMA = "xception-edge/report"
SCHEMA_VERSION = 1
KERAS = "keras-fp32"
BATCH = 32
MLPERF_RATIO = 0.99  # MLPerf's closed-division rule: a quantized model keeps ≥ 99% of fp32 top-1


@dataclasses.dataclass(frozen=True)
class EvaluateRequest:
    model: str
    artifacts: Path
    data: Path
    report: Path = Path("report")
    resume: bool = False
    runs: int = 50
    warmup: int = 5
    decode_threads: int = 2  # 0: decode in the main thread, before inference (no overlap)
    unsafe_model: bool = False


# ------------------------------------------------------------------ results cache (--resume)
def _key(**parts) -> str:
    return hashlib.sha256(json.dumps({"schema_version": SCHEMA_VERSION, **parts}, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ scoring
def _score(
    probs: np.ndarray, idx: np.ndarray, data: LabelledImages, labels: list[str], failed_idx: list[int]
) -> tuple[dict, dict]:
    y = np.array([data.targets[i] for i in idx], dtype=np.int64)
    acc = accuracy_report(probs, y, labels, undecodable_labels=[data.targets[i] for i in failed_idx])
    keys = data.keys
    preds = {keys[i]: labels[int(c)] for i, c in zip(idx, probs.argmax(-1))}
    return acc, preds


def _compare(row: dict, acc: dict, preds: dict, ref: dict, ref_preds: dict, label_of: dict) -> dict:
    """drop (percentage points), ratio to fp32, agreement and flips per class."""
    agr = agreement(preds, ref_preds)
    flips: dict[str, list] = {}
    for f in agr["flipped"]:
        flips.setdefault(label_of[f["image"]], []).append(
            {"image": f["image"], "keras": f["reference"], "artifact": f["prediction"]}
        )
    ratio = acc["top1"] / ref["top1"] if ref["top1"] else None
    per_class = {c: {**v, "drop_pp": 100 * (v["top1"] - ref["per_class"][c]["top1"])} for c, v in acc["per_class"].items()}
    return {
        **row,
        "images": acc["images"],
        "top1": acc["top1"],
        "top5": acc["top5"],
        "drop_pp": 100 * (acc["top1"] - ref["top1"]),
        "top5_drop_pp": 100 * (acc["top5"] - ref["top5"]),
        "ratio": ratio,
        "meets_mlperf_99": None if ratio is None else bool(ratio >= MLPERF_RATIO),
        "agreement": agr["agreement"],
        "flipped": len(agr["flipped"]),
        "flips_per_class": {c: flips[c] for c in ref["per_class"] if c in flips},  # in label order
        "per_class": per_class,
    }


def _predict(predict, feed, num_classes: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Run predict over the feed in order; (indices, probs, seconds inside predict)."""
    idx_parts, prob_parts, busy = [], [], 0.0
    for idx, xb in feed.batches(BATCH):
        t0 = time.perf_counter()
        prob_parts.append(np.asarray(predict(xb), dtype=np.float32))
        busy += time.perf_counter() - t0
        idx_parts.append(idx)
    if not idx_parts:
        return np.empty(0, np.int64), np.empty((0, num_classes), np.float32), busy
    return np.concatenate(idx_parts), np.concatenate(prob_parts), busy


# ------------------------------------------------------------------ the run
def run_evaluate(req: EvaluateRequest) -> dict:
    """Evaluate under an exclusive lock on the --report folder (a second run there fails at once)."""
    report = Path(req.report)
    if report.exists() and not report.is_dir():
        raise BadInput(f"--report {report} is a file; pass a folder for report.json, report.md and report.html")
    with output_lock(report, "--report"):
        return _run_evaluate(req)


def _run_evaluate(req: EvaluateRequest) -> dict:
    if req.runs < 1:
        raise BadInput(f"--runs {req.runs} must be at least 1")
    if req.warmup < 0:
        raise BadInput(f"--warmup {req.warmup} must not be negative")
    if req.decode_threads < 0:
        raise BadInput(f"--decode-threads {req.decode_threads} must not be negative")
    report_dir = Path(req.report)
    arts = discover_artifacts(Path(req.artifacts), report_dir)
    spec, labels = shared_preprocessing(arts)
    data = labelled_images(req.data, labels, require_labels=True)
    _check_report_dir(report_dir)
    t_start = time.perf_counter()
    data_sha = data.sha256(labels)
    model_sha = _model_hash(req.model)
    store = ResultStore(report_dir / RESULTS, resume=req.resume, labels=labels)
    settings = {"runs": req.runs, "warmup": req.warmup}

    here = host()  # latency belongs to the machine: a result measured elsewhere is not reused
    keras_key = (
        _key(kind="keras", model=model_sha, data=data_sha, preprocessing=spec.to_dict(), host=here, **settings)
        if model_sha
        else None
    )
    keras_cached = store.load(KERAS, keras_key, keras=True) if keras_key else None
    art_keys = {a.name: _key(kind="artifact", manifest=a.manifest_sha256, data=data_sha, host=here, **settings) for a in arts}
    cached = {a.name: store.load(a.name, art_keys[a.name]) for a in arts}
    reused = [n for n, c in cached.items() if c] + ([KERAS] if keras_cached else [])
    if reused:
        console.info(f"--resume: reusing {len(reused)} finished result(s) from {store.folder}: {', '.join(reused)}")

    timing: dict = {}
    rows: dict[str, dict] = {}
    todo = [a for a in arts if not cached[a.name]]
    try:
        if keras_cached and not todo:
            keras = keras_cached
        else:
            keras = _compute(req, arts, todo, spec, labels, data, keras_cached, keras_key, art_keys, store, timing, rows)
        for a in arts:
            if cached[a.name]:
                rows[a.name] = {**cached[a.name]["row"], "reused": True}
    except KeyboardInterrupt:
        done = len(store.used)
        if done:
            console.warn(f"interrupted: {done} finished result(s) are kept in {store.folder}; rerun with --resume to skip them")
        raise

    ref = {**keras["row"], "reused": keras is keras_cached}
    src_sha = keras["model_sha256"]
    for a in arts:
        rows[a.name]["same_source_model"] = same_source_model(a, src_sha)
    timing["total_seconds"] = time.perf_counter() - t_start
    report = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "xception_edge": __version__,
        "host": here,
        "settings": {**settings, "decode_threads": req.decode_threads, "batch": BATCH, "mlperf_ratio": MLPERF_RATIO},
        "model": {"spec": req.model, "sha256": src_sha, **keras["model"]},
        "preprocessing": spec.to_dict(),
        "labels": labels,
        "data": {**keras["data"], "source": data.origin, "root": str(data.root), "form": data.form, "sha256": data_sha},
        "reference": ref,
        "artifacts": [rows[a.name] for a in arts],
        "timing": timing,
    }
    from .report import write_report

    report["files"] = {k: str(v) for k, v in write_report(report, report_dir).items()}
    store.prune()
    return report


def _compute(req, arts, todo, spec, labels, data, keras_cached, keras_key, art_keys, store, timing, rows) -> dict:
    """Decode once (in the background), run Keras unless cached, then every artifact not cached."""
    from .imagefeed import ImageFeed
    from .runtime import open_artifact

    label_of = dict(zip(data.keys, (labels[t] for t in data.targets)))
    # The model loads before decoding starts: TensorFlow's import and Keras's deserialisation hold
    # the GIL most of the time, so a decoding thread beside them slowed both (measured).
    loaded = None if keras_cached else _load_model(req, spec, labels, timing)
    with ImageFeed(data.files, spec, workers=req.decode_threads) as feed:
        t0 = time.perf_counter()
        if keras_cached:
            keras = keras_cached
        else:
            keras = _keras_pass(req, *loaded, labels, data, feed, timing, t0)
            if keras_key:
                store.save(KERAS, keras_key, keras)
        ref, ref_preds = keras["row"], keras["predictions"]
        feed.wait(len(feed))
        failed_idx = sorted(feed.failed)
        ok = feed.decoded
        if len(ok) == 0:
            raise BadInput(f"no image of {data.origin} could be decoded: {feed.failed[0]}")
        x0 = feed.x[ok[0]][None]
        timing["artifact_seconds"] = {}
        for a in todo:
            t1 = time.perf_counter()
            rt = open_artifact(a.folder, manifest=a.manifest)
            load_ms = (time.perf_counter() - t1) * 1000
            console.info(f"[{a.name}] predicting {len(ok)} images")
            idx, probs, _ = _predict(rt.predict, feed, len(labels))
            acc, preds = _score(probs, idx, data, labels, failed_idx)
            stats = measure_latency(rt, x0, runs=req.runs, warmup=req.warmup, load_ms=load_ms, what=a.name)
            m = a.manifest
            row = {
                "name": a.name,
                "path": str(a.folder.resolve()),
                "target": m["target"],
                "backend": m["backend"],
                "format": m.get("format"),
                "precision": m["precision"],
                "hardware": m.get("hardware"),
                "manifest_sha256": a.manifest_sha256,
                "size_bytes": model_bytes(m),
                "threads": rt.threads,
                **float_layers(m),
            }
            row = _compare(row, acc, preds, ref, ref_preds, label_of)
            row.update(
                latency=stats.to_dict(),
                cpu_warning="; ".join(filter(None, [cpu_mismatch(m), rt.note])) or None,
                seconds=time.perf_counter() - t1,
            )
            store.save(a.name, art_keys[a.name], {"row": row})
            rows[a.name] = {**row, "reused": False}
            timing["artifact_seconds"][a.name] = row["seconds"]
            del rt
    return keras


def _graph_predict(src):
    """The source model as one compiled graph function (an eager Keras call costs ~10x more per
    image on a small model, which would make the fp32 reference look slower than it is)."""
    if src.keras_model is None:
        return src.predict  # a SavedModel signature is a graph already
    from . import frameworks

    tf = frameworks.tensorflow()
    model = src.keras_model
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: fn(tf.constant(x)).numpy()


def _load_model(req, spec: PreprocessSpec, labels, timing: dict):
    from .model_io import load_source

    t0 = time.perf_counter()
    src = load_source(req.model, unsafe=req.unsafe_model)
    timing["model_load_seconds"] = time.perf_counter() - t0
    if (src.height, src.width) != (spec.height, spec.width):
        raise BadInput(
            f"--model {req.model} takes {src.height}x{src.width} images but the artifacts were made for "
            f"{spec.height}x{spec.width}; pass the model they were converted from"
        )
    if src.num_classes != len(labels):
        raise BadInput(
            f"--model {req.model} has {src.num_classes} outputs but the artifacts' labels.txt has {len(labels)} "
            "classes; pass the model they were converted from"
        )
    return src, _graph_predict(src)


def _keras_pass(req, src, predict, labels, data: LabelledImages, feed, timing: dict, t_feed: float) -> dict:
    from .latency import summarize, time_invoke

    console.info(f"[{KERAS}] predicting {len(feed)} images (decoding in {feed.workers or 'the main'} thread(s) meanwhile)")
    idx, probs, busy = _predict(predict, feed, len(labels))
    timing["keras_predict_seconds"] = busy
    timing["keras_waited_for_decoding_seconds"] = feed.wait_seconds
    timing["first_pass_wall_seconds"] = time.perf_counter() - t_feed
    timing["decode_seconds"] = feed.decode_seconds
    timing["decode_cpu_seconds"] = feed.decode_cpu_seconds
    timing["serial_estimate_seconds"] = feed.decode_cpu_seconds + busy
    failed_idx = sorted(feed.failed)
    if len(idx) == 0:
        raise BadInput(f"no image of {data.origin} could be decoded: {feed.failed[0]}")
    if failed_idx:
        console.warn(
            f"{len(failed_idx)} image(s) could not be decoded; counted as misses for every model: "
            f"{'; '.join(feed.failed[i] for i in failed_idx[:3])}"
        )
    acc, preds = _score(probs, idx, data, labels, failed_idx)
    x0 = feed.x[idx[0]][None]
    with console.progress(f"Timing {KERAS}: {req.warmup} warm-up + {req.runs} runs", total=None):
        first_ms, samples = time_invoke(predict, x0, runs=req.runs, warmup=req.warmup)
    stats = summarize(
        samples, warmup=req.warmup, threads=os.cpu_count() or 1, load_ms=timing["model_load_seconds"] * 1000, first_ms=first_ms
    )
    path = Path(req.model)
    size = (
        (path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))
        if path.exists()
        else None
    )
    keys = data.keys
    row = {
        "name": KERAS,
        "path": str(path.resolve()) if path.exists() else req.model,
        "target": None,
        "backend": "keras",
        "format": src.kind,
        "precision": "fp32",
        "hardware": "any",
        "size_bytes": size,
        "threads": os.cpu_count() or 1,
        "images": acc["images"],
        "top1": acc["top1"],
        "top5": acc["top5"],
        "drop_pp": 0.0,
        "top5_drop_pp": 0.0,
        "ratio": 1.0 if acc["top1"] else None,
        "meets_mlperf_99": True if acc["top1"] else None,
        "agreement": 1.0,
        "flipped": 0,
        "flips_per_class": {},
        "per_class": {c: {**v, "drop_pp": 0.0} for c, v in acc["per_class"].items()},
        "latency": stats.to_dict(),
        "cpu_warning": None,
    }
    return {
        "row": row,
        "predictions": preds,
        "model_sha256": src.sha256,
        "model": {"kind": src.kind, "input": [src.height, src.width, 3], "num_classes": src.num_classes},
        "data": {
            "images": len(data.files),
            "decoded": int(len(idx)),
            "undecodable": [{"image": keys[i], "label": labels[data.targets[i]], "error": feed.failed[i]} for i in failed_idx],
            "per_class_images": {c: v["images"] for c, v in acc["per_class"].items()},
        },
    }
