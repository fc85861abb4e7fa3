"""evaluate's Keras fp32 reference: load --model (checked against the artifacts), predict every
image as the first pass over the decoding feed, time it, and score it (its row of the report)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import console
from .dataset import LabelledImages
from .errors import BadInput
from .evaluation import KERAS, _predict, _score
from .preprocess import PreprocessSpec
from .records import ReportRow


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


def load_model(req, spec: PreprocessSpec, labels: list[str]):
    """(source model, its graph predict, seconds to load it); BadInput when it is not the
    artifacts' model (another input size or class count)."""
    from .model_io import load_source

    t0 = time.perf_counter()
    src = load_source(req.model, unsafe=req.unsafe_model)
    seconds = time.perf_counter() - t0
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
    return src, _graph_predict(src), seconds


def keras_pass(req, src, predict, labels, data: LabelledImages, feed, t_feed: float, load_seconds: float) -> tuple[dict, dict]:
    """Predict every image with Keras as it is decoded, then time it: (the Keras result as the
    results store keeps it, the timing of the pass)."""
    console.info(f"[{KERAS}] predicting {len(feed)} images (decoding in {feed.workers or 'the main'} thread(s) meanwhile)")
    idx, probs, busy = _predict(predict, feed, len(labels))
    timing = {
        "keras_predict_seconds": busy,
        "keras_waited_for_decoding_seconds": feed.wait_seconds,
        "first_pass_wall_seconds": time.perf_counter() - t_feed,
        "decode_seconds": feed.decode_seconds,
        "decode_cpu_seconds": feed.decode_cpu_seconds,
        "serial_estimate_seconds": feed.decode_cpu_seconds + busy,
    }
    if len(idx) == 0:
        raise BadInput(f"no image of {data.origin} could be decoded: {feed.failed[0]}")
    result = keras_result(req, src, predict, labels, data, idx, probs, feed.failed, feed.x[idx[0]][None], load_seconds)
    return result, timing


def keras_result(req, src, predict, labels, data: LabelledImages, idx, probs, failed: dict, x0, load_seconds: float) -> dict:
    """The Keras result from its predictions (``probs`` of images ``idx``, made here or on Ray
    workers; ``failed``: image index -> why it could not be decoded), with its latency timed here
    on ``x0``: the result as the results store keeps it."""
    from .latency import summarize, time_invoke

    failed_idx = sorted(failed)
    if failed_idx:
        console.warn(
            f"{len(failed_idx)} image(s) could not be decoded; counted as misses for every model: "
            f"{'; '.join(failed[i] for i in failed_idx[:3])}"
        )
    acc, preds = _score(probs, idx, data, labels, failed_idx)
    with console.progress(f"Timing {KERAS}: {req.warmup} warm-up + {req.runs} runs", total=None):
        first_ms, samples = time_invoke(predict, x0, runs=req.runs, warmup=req.warmup)
    stats = summarize(samples, warmup=req.warmup, threads=os.cpu_count() or 1, load_ms=load_seconds * 1000, first_ms=first_ms)
    keys = data.keys
    return {
        "row": _keras_row(req.model, src.kind, acc, stats.to_dict()),
        "predictions": preds,
        "model_sha256": src.sha256,
        "model": {"kind": src.kind, "input": [src.height, src.width, 3], "num_classes": src.num_classes},
        "data": {
            "images": len(data.files),
            "decoded": int(len(idx)),
            "undecodable": [{"image": keys[i], "label": labels[data.targets[i]], "error": failed[i]} for i in failed_idx],
            "per_class_images": {c: v["images"] for c, v in acc["per_class"].items()},
        },
    }


def _keras_row(model: str, kind: str, acc: dict, latency: dict) -> ReportRow:
    path = Path(model)
    size = None
    if path.exists():
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return ReportRow(
        name=KERAS,
        path=str(path.resolve()) if path.exists() else model,
        target=None,
        backend="keras",
        format=kind,
        precision="fp32",
        hardware="any",
        size_bytes=size,
        threads=os.cpu_count() or 1,
        images=acc["images"],
        top1=acc["top1"],
        top5=acc["top5"],
        drop_pp=0.0,
        top5_drop_pp=0.0,
        ratio=1.0 if acc["top1"] else None,
        meets_mlperf_99=True if acc["top1"] else None,
        agreement=1.0,
        flipped=0,
        flips_per_class={},
        per_class={c: {**v, "drop_pp": 0.0} for c, v in acc["per_class"].items()},
        latency=latency,
        cpu_warning=None,
    )
