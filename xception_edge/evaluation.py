"""`xception-edge evaluate`: the Keras fp32 model and every artifact of a folder on the same
labelled images: top-1/top-5, the drop vs fp32, agreement and flips, per-class accuracy,
latency and size, written as report.json / report.md / report.html.

Images are decoded once (background threads fill one array while the first model consumes it in
order) and shared by every backend. Each finished result is stored under REPORT/results/,
keyed by what decides it, so `--resume` skips what an interrupted run already finished.
With ``executor="ray"`` the accuracy passes run as Ray tasks over shards (xception_edge.scale)
and their per-image results are scored here by the same functions (``keras_result``,
``artifact_row``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from . import __version__, console
from .accuracy import accuracy_report, agreement, paired_drop
from .artifact import output_lock
from .benchmark import cpu_mismatch, measure_latency
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
    same_source_model,
    shared_preprocessing,
)
from .records import REPORT_SCHEMA, REPORT_VERSION, Report, ReportRow
from .resultstore import ResultStore
from .stats import CI_LEVEL, RESAMPLES, SEED

SCHEMA = REPORT_SCHEMA
SCHEMA_VERSION = REPORT_VERSION
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
    device: object | None = None  # devices.evaluate.DeviceRun: run every artifact there too
    executor: str = "local"  # "ray": the accuracy passes as Ray tasks over shards (xception_edge.scale)
    ray_address: str | None = None
    ship_data: bool = False  # send images, artifacts and model through Ray's object store
    shard_size: int | None = None  # images per Ray task (a multiple of BATCH); None: scale.evaluate.SHARD_SIZE


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


def _compare(row: ReportRow, acc: dict, preds: dict, ref: ReportRow, ref_preds: dict, label_of: dict) -> ReportRow:
    """``row`` scored against the Keras reference: drop (percentage points) with its paired-bootstrap
    interval and McNemar's p on the images one model got right and the other not, ratio to fp32,
    agreement and flips per class."""
    agr = agreement(preds, ref_preds)
    flips: dict[str, list] = {}
    for f in agr["flipped"]:
        flips.setdefault(label_of[f["image"]], []).append(
            {"image": f["image"], "keras": f["reference"], "artifact": f["prediction"]}
        )
    ratio = acc["top1"] / ref.top1 if ref.top1 else None
    per_class = {c: {**v, "drop_pp": 100 * (v["top1"] - ref.per_class[c]["top1"])} for c, v in acc["per_class"].items()}
    return dataclasses.replace(
        row,
        images=acc["images"],
        top1=acc["top1"],
        top5=acc["top5"],
        drop_pp=100 * (acc["top1"] - ref.top1),
        top5_drop_pp=100 * (acc["top5"] - ref.top5),
        ratio=ratio,
        meets_mlperf_99=None if ratio is None else bool(ratio >= MLPERF_RATIO),
        agreement=agr["agreement"],
        flipped=len(agr["flipped"]),
        flips_per_class={c: flips[c] for c in ref.per_class if c in flips},  # in label order
        per_class=per_class,
        **paired_drop(preds, ref_preds, label_of),
    )


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
@dataclasses.dataclass(frozen=True)
class _Run:
    """What every step of one evaluation reads; nothing in it changes once the run has started."""

    req: EvaluateRequest
    arts: tuple[Artifact, ...]
    spec: PreprocessSpec
    labels: list[str]
    data: LabelledImages
    data_sha: str
    host: dict  # latency belongs to the machine: a result measured elsewhere is not reused
    store: ResultStore
    keras_key: str | None  # None: --model has no hash before it is built (keras:xception), never reused
    art_keys: dict[str, str]
    device: object | None  # devices.evaluate.DeviceRun

    @property
    def settings(self) -> dict:
        return {"runs": self.req.runs, "warmup": self.req.warmup}


@dataclasses.dataclass(frozen=True)
class _Shared:
    """The decoded images and the Keras reference every artifact is scored against."""

    feed: object  # imagefeed.ImageFeed, every image decoded (on Ray: only for --device, else None)
    reference: ReportRow
    predictions: dict[str, str]
    label_of: dict[str, str]  # image key -> its true class
    failed_idx: list[int]
    x0: np.ndarray  # the first decodable image (1, H, W, 3): what latency is timed on


def run_evaluate(req: EvaluateRequest) -> Report:
    """Evaluate under an exclusive lock on the --report folder (a second run there fails at once)."""
    report = Path(req.report)
    if report.exists() and not report.is_dir():
        raise BadInput(f"--report {report} is a file; pass a folder for report.json, report.md and report.html")
    with output_lock(report, "--report"):
        return _run_evaluate(req)


def _run_evaluate(req: EvaluateRequest) -> Report:
    from .report import write_report

    if req.runs < 1:
        raise BadInput(f"--runs {req.runs} must be at least 1")
    for option, value in (("--warmup", req.warmup), ("--decode-threads", req.decode_threads)):
        if value < 0:
            raise BadInput(f"{option} {value} must not be negative")
    if req.executor != "local" or req.ray_address or req.ship_data or req.shard_size is not None:
        from .scale.evaluate import check_request

        req = check_request(req)  # before any data is hashed: Ray installed, --ray-address reachable
    arts = discover_artifacts(Path(req.artifacts), Path(req.report))
    spec, labels = shared_preprocessing(arts)
    data = labelled_images(req.data, labels, require_labels=True)
    _check_report_dir(Path(req.report))
    t_start = time.perf_counter()
    run = _open_run(req, tuple(arts), spec, labels, data)
    keras, reference, artifacts, devices, timing = _results(run)
    timing["total_seconds"] = time.perf_counter() - t_start
    report = dataclasses.replace(_assemble(run, keras, reference, artifacts, timing), devices=tuple(devices))
    files = write_report(report, Path(req.report))
    run.store.prune()
    return dataclasses.replace(report, files={k: str(v) for k, v in files.items()})


def _open_run(req: EvaluateRequest, arts: tuple[Artifact, ...], spec: PreprocessSpec, labels: list[str], data) -> _Run:
    """Hash the data and --model, and key every result by what decides it (for --resume)."""
    data_sha = data.sha256(labels)
    model_sha = _model_hash(req.model)
    here = host()
    settings = {"runs": req.runs, "warmup": req.warmup}
    keras_key = (
        _key(kind="keras", model=model_sha, data=data_sha, preprocessing=spec.to_dict(), host=here, **settings)
        if model_sha
        else None
    )
    if req.device is not None:  # a device row is part of the artifact's result: its settings key both
        settings = {**settings, "on_device": req.device.settings}
    art_keys = {a.name: _key(kind="artifact", manifest=a.manifest_sha256, data=data_sha, host=here, **settings) for a in arts}
    store = ResultStore(Path(req.report) / RESULTS, resume=req.resume, labels=labels)
    return _Run(req, arts, spec, labels, data, data_sha, here, store, keras_key, art_keys, req.device)


def _results(run: _Run) -> tuple[dict, ReportRow, list[ReportRow], list[ReportRow], dict]:
    """The Keras result, its row, every artifact's row and every device row (reused or
    computed), and the timing."""
    keras_cached = run.store.load(KERAS, run.keras_key, keras=True) if run.keras_key else None
    cached = {a.name: run.store.load(a.name, run.art_keys[a.name]) for a in run.arts}
    reused = [n for n, c in cached.items() if c] + ([KERAS] if keras_cached else [])
    if reused:
        console.info(f"--resume: reusing {len(reused)} finished result(s) from {run.store.folder}: {', '.join(reused)}")
    todo = [a for a in run.arts if not cached[a.name]]
    keras, rows, device_rows, timing = keras_cached, {}, {}, {}
    compute = _compute
    if run.req.executor == "ray":
        from .scale.evaluate import compute
    try:
        if not (keras_cached and not todo):
            keras, rows, device_rows, timing = compute(run, todo, keras_cached)
    except KeyboardInterrupt:
        done = len(run.store.used)
        if done:
            console.warn(
                f"interrupted: {done} finished result(s) are kept in {run.store.folder}; rerun with --resume to skip them"
            )
        raise
    rows |= {name: dataclasses.replace(c["row"], reused=True) for name, c in cached.items() if c}
    device_rows |= {
        name: dataclasses.replace(c["device_row"], reused=True) for name, c in cached.items() if c and c.get("device_row")
    }
    reference = dataclasses.replace(keras["row"], reused=keras is keras_cached)
    src_sha = keras["model_sha256"]
    artifacts = [dataclasses.replace(rows[a.name], same_source_model=same_source_model(a, src_sha)) for a in run.arts]
    devices = [
        dataclasses.replace(device_rows[a.name], same_source_model=same_source_model(a, src_sha))
        for a in run.arts
        if a.name in device_rows
    ]
    return keras, reference, artifacts, devices, timing


def _assemble(run: _Run, keras: dict, reference: ReportRow, artifacts: list[ReportRow], timing: dict) -> Report:
    data = run.data
    return Report(
        reference=reference,
        artifacts=tuple(artifacts),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        xception_edge=__version__,
        host=run.host,
        settings={
            **run.settings,
            "decode_threads": run.req.decode_threads,
            "batch": BATCH,
            "mlperf_ratio": MLPERF_RATIO,
            "drop_ci": {"method": "paired bootstrap, percentile", "level": CI_LEVEL, "resamples": RESAMPLES, "seed": SEED},
            **({"executor": "ray", "shard_size": run.req.shard_size} if run.req.executor == "ray" else {}),
        },
        model={"spec": run.req.model, "sha256": keras["model_sha256"], **keras["model"]},
        preprocessing=run.spec.to_dict(),
        labels=run.labels,
        data={**keras["data"], "source": data.origin, "root": str(data.root), "form": data.form, "sha256": run.data_sha},
        timing=timing,
    )


def _compute(run: _Run, todo: list[Artifact], keras_cached: dict | None) -> tuple[dict, dict, dict, dict]:
    """Decode once (in the background), run Keras unless cached, then every artifact not cached;
    (the Keras result, the new artifact rows and device rows by name, the timing)."""
    from .evaluation_keras import keras_pass, load_model
    from .imagefeed import ImageFeed

    timing: dict = {}
    # The model loads before decoding starts: TensorFlow's import and Keras's deserialisation hold
    # the GIL most of the time, so a decoding thread beside them slowed both (measured).
    if not keras_cached:
        src, predict, timing["model_load_seconds"] = load_model(run.req, run.spec, run.labels)
    with ImageFeed(run.data.files, run.spec, workers=run.req.decode_threads) as feed:
        t0 = time.perf_counter()
        keras = keras_cached
        if not keras_cached:
            keras, keras_timing = keras_pass(run.req, src, predict, run.labels, run.data, feed, t0, timing["model_load_seconds"])
            timing |= keras_timing
            if run.keras_key:
                run.store.save(KERAS, run.keras_key, keras)
        shared = _shared(run, feed, keras)
        rows, device_rows = {}, {}
        timing["artifact_seconds"] = {}
        for a in todo:
            row, on_device = _artifact_row(run, a, shared)
            run.store.save(a.name, run.art_keys[a.name], {"row": row, "device_row": on_device})
            rows[a.name] = dataclasses.replace(row, reused=False)
            timing["artifact_seconds"][a.name] = row.seconds
            if on_device is not None:
                device_rows[a.name] = on_device
    return keras, rows, device_rows, timing


def _shared(run: _Run, feed, keras: dict) -> _Shared:
    feed.wait(len(feed))
    ok = feed.decoded
    if len(ok) == 0:
        raise BadInput(f"no image of {run.data.origin} could be decoded: {feed.failed[0]}")
    return shared_reference(run, keras, sorted(feed.failed), feed.x[ok[0]][None], feed)


def shared_reference(run: _Run, keras: dict, failed_idx: list[int], x0: np.ndarray, feed=None) -> _Shared:
    """What every artifact row is scored against: the Keras result, the true classes, the
    undecodable images and the image latency is timed on."""
    label_of = dict(zip(run.data.keys, (run.labels[t] for t in run.data.targets)))
    return _Shared(feed, keras["row"], keras["predictions"], label_of, failed_idx, x0)


def _artifact_row(run: _Run, a: Artifact, shared: _Shared) -> tuple[ReportRow, ReportRow | None]:
    """Open one artifact, predict every image, score it against Keras and time it; then the same
    on the device, if the run has one: (the host's row, the device's row or None)."""
    from .runtime import open_artifact

    t1 = time.perf_counter()
    rt = open_artifact(a.folder, manifest=a.manifest)
    load_ms = (time.perf_counter() - t1) * 1000
    console.info(f"[{a.name}] predicting {len(shared.feed.decoded)} images")
    idx, probs, _ = _predict(rt.predict, shared.feed, len(run.labels))
    base = row_base(a, rt)
    row = artifact_row(run, shared, base, rt, idx, probs, load_ms=load_ms, t1=t1)
    return row, on_device(run, a, shared, base, row, idx, probs)


def on_device(run: _Run, a: Artifact, shared: _Shared, base: ReportRow, row: ReportRow, idx, probs) -> ReportRow | None:
    """The artifact's row on the run's device (None without one): the decoded images ``idx`` of
    ``shared.feed`` go there, scored as the host's ``row`` was; ``probs`` are this host's full
    outputs of them, what the device's parity is measured against."""
    if run.device is None:
        return None
    from .devices.evaluate import device_row

    def score(outputs: np.ndarray) -> ReportRow:
        acc, preds = _score(outputs, idx, run.data, run.labels, shared.failed_idx)
        return _compare(base, acc, preds, shared.reference, shared.predictions, shared.label_of)

    return device_row(run.device, a.folder, a.manifest, row, shared.feed.x[idx], probs, score)


def row_base(a: Artifact, rt) -> ReportRow:
    """An artifact's row before it is scored: what its manifest and runtime say."""
    m, budget = a.manifest, a.manifest.accuracy_budget
    return ReportRow(
        name=a.name,
        path=str(a.folder.resolve()),
        target=m.target,
        backend=m.backend,
        format=m.format,
        precision=m.precision,
        hardware=m.hardware,
        manifest_sha256=a.manifest_sha256,
        size_bytes=m.model_bytes,
        threads=rt.threads,
        float_layers=m.float_layers,
        float_mac_share=budget.float_mac_share if budget else None,
        max_drop_pp=budget.max_drop_pp if budget else None,
    )


def artifact_row(run: _Run, shared: _Shared, base: ReportRow, rt, idx, probs, *, load_ms: float, t1: float) -> ReportRow:
    """The artifact's row from its predictions (``probs`` of images ``idx``, made here or on Ray
    workers): scored against Keras, with its latency timed here on ``rt``."""
    acc, preds = _score(probs, idx, run.data, run.labels, shared.failed_idx)
    stats = measure_latency(rt, shared.x0, runs=run.req.runs, warmup=run.req.warmup, load_ms=load_ms, what=base.name)
    row = _compare(base, acc, preds, shared.reference, shared.predictions, shared.label_of)
    warning = "; ".join(filter(None, [cpu_mismatch(rt.manifest), rt.note])) or None
    return dataclasses.replace(row, latency=stats.to_dict(), cpu_warning=warning, seconds=time.perf_counter() - t1)
