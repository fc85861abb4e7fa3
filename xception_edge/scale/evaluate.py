"""The driver side of `evaluate --executor ray`: shard the labelled images, run every shard as a
Ray task (``worker.run_shard``: Keras and every artifact over its images), checkpoint each finished
shard under REPORT/shards/, and merge the per-image results into the same rows, report.json/md/html
as a local run (``evaluation.keras_result``, ``evaluation.artifact_row``).

Latency is not measured on the workers: it belongs to a machine, so each model is timed here, on
the driver, exactly as a local run times it, and the report says so. With ``--device`` every
artifact then also runs on the device, from here, as in a local run (``evaluation.on_device``):
the driver decodes the images once and runs each artifact over them for the full outputs the
device's parity is measured against (a shard holds the top-k only), after checking that their
top-k is the shards'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

from .. import console
from ..errors import BadInput, XceptionEdgeError
from .executor import check_executor, connect, map_tasks, probe, ray_module
from .shardstore import SHARDS, ShardStore, dense
from .worker import KERAS, SHIP_HINT, ArtifactRef, Job, Shard, check_paths, shard_task

SHARD_SIZE = 256  # images per task: ~5 % task overhead at 299 px on one core (bench/ray_scaling.py)
SHARD_VERSION = 1


class ShardMismatch(XceptionEdgeError):
    """An artifact's outputs on the driver are not the Ray shards' (exit 1)."""

    exit_code = 1


def check_request(req):
    """The request with its shard size resolved; BadInput before any work for a Ray option without
    --executor ray, a bad --shard-size, Ray missing or an unreachable --ray-address."""
    from ..evaluation import BATCH

    check_executor(req.executor)
    if req.executor == "local":
        raise BadInput("--ray-address, --ship-data and --shard-size are for --executor ray; add --executor ray")
    size = SHARD_SIZE if req.shard_size is None else req.shard_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % BATCH:
        raise BadInput(
            f"--shard-size {req.shard_size!r} must be a positive multiple of {BATCH} (the Keras batch: each shard then "
            "predicts in a local run's batches, and its results equal a local run's bit for bit)"
        )
    ray_module()
    if req.ray_address:
        probe(req.ray_address)
        connect(req.ray_address)  # a cluster that refuses us (its token) is bad input before anything is written
    return dataclasses.replace(req, shard_size=size)


def compute(run, todo: list, keras_cached: dict | None) -> tuple[dict, dict, dict, dict]:
    """evaluation._compute's Ray twin: (the Keras result, the new artifact rows and device rows by
    name, the timing)."""
    ray = connect(run.req.ray_address)
    nodes = _nodes(ray)
    if not run.req.ship_data:
        _check_visible(ray, nodes, run)
    job = _job(ray, run)
    results, summary = _run_shards(run, job, _plan(run), nodes)
    preds, failed = _merge(results, [KERAS, *(a.name for a in run.arts)], len(run.labels))
    timing: dict = {"ray": summary}
    keras, x0 = _keras(run, keras_cached, preds, failed, {r["model_sha256"] for r in results}, timing)
    from ..evaluation import shared_reference

    with _device_feed(run, todo) as feed:
        shared = shared_reference(run, keras, sorted(failed), x0, feed)
        rows, device_rows = _artifact_rows(run, todo, shared, preds, timing, job.top_k)
    return keras, rows, device_rows, timing


# ------------------------------------------------------------------ before the shards
def _nodes(ray) -> list[tuple[str, str]]:
    """(node id, address) of every live node with a CPU."""
    nodes = [(n["NodeID"], n["NodeManagerAddress"]) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise BadInput("the Ray cluster has no live node with a CPU; add one with `ray start --address …`")
    return nodes


def _check_visible(ray, nodes: list[tuple[str, str]], run) -> None:
    """Every node must read --data (its folder and its first and last image), every artifact
    folder and --model at the paths the driver sees: else one line naming the node and path."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    files = run.data.files
    paths = [("--data", _abs(run.data.origin)), ("the image", _abs(files[0])), ("the image", _abs(files[-1]))]
    paths += [("the artifact", _abs(a.folder)) for a in run.arts]
    if os.path.exists(run.req.model):
        paths.append(("--model", _abs(run.req.model)))
    check = ray.remote(check_paths)
    refs = [
        check.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(
            paths
        )
        for node_id, _ in nodes
    ]
    for (node_id, ip), problems in zip(nodes, ray.get(refs)):
        if problems:
            raise BadInput(f"Ray node {ip} (node {node_id[:8]}) cannot read {problems[0]}; {SHIP_HINT}")


def _abs(path) -> str:
    return os.path.abspath(path)


def _files(path: Path) -> dict[str, bytes]:
    """A file ({"": bytes}) or a folder ({relative path: bytes}), to ship."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _job(ray, run) -> Job:
    from ..evaluation_inputs import _model_hash

    ship = run.req.ship_data
    model_sha = _model_hash(run.req.model)
    model = _abs(run.req.model) if model_sha else run.req.model
    arts = tuple(
        ArtifactRef(a.name, _abs(a.folder), a.manifest_sha256, ray.put(_files(a.folder)) if ship else None) for a in run.arts
    )
    blob = ray.put(_files(Path(model))) if ship and model_sha else None
    return Job(model, model_sha, run.req.unsafe_model, run.spec, tuple(run.labels), arts, blob)


def _plan(run) -> list[Shard]:
    size, files = run.req.shard_size, run.data.files
    return [
        Shard(i, start, tuple(str(f) for f in files[start : start + size]), tuple(_abs(f) for f in files[start : start + size]))
        for i, start in enumerate(range(0, len(files), size))
    ]


def _key(run, job: Job, shard: Shard) -> str:
    from ..evaluation import BATCH

    parts = {
        "version": SHARD_VERSION,
        "data": run.data_sha,
        "model": job.model_sha256 or job.model,
        "artifacts": [[a.name, a.manifest_sha256] for a in job.artifacts],
        "preprocessing": run.spec.to_dict(),
        "range": [shard.start, len(shard.files)],
        "batch": BATCH,
        "top_k": job.top_k,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ the shards
def _run_shards(run, job: Job, shards: list[Shard], nodes: list) -> tuple[list[dict], dict]:
    """Every shard's result (reused from REPORT/shards with --resume, else computed on Ray and
    checkpointed as it finishes) and the throughput summary."""
    store = ShardStore(
        Path(run.req.report) / SHARDS,
        resume=run.req.resume and job.model_sha256 is not None,  # keras:xception: no hash to key a shard by
        names=[KERAS, *(a.name for a in job.artifacts)],
        num_classes=len(run.labels),
    )
    keys = {s.index: _key(run, job, s) for s in shards}
    results = {s.index: store.load(s.index, keys[s.index], s.start, len(s.files)) for s in shards}
    todo = [s for s in shards if results[s.index] is None]
    if run.req.ship_data:  # the images' bytes go with each task, through Ray's object store
        todo = [dataclasses.replace(s, blobs=tuple(Path(p).read_bytes() for p in s.paths)) for s in todo]
    t0 = time.perf_counter()
    computed: list[dict] = []
    try:
        what = f"Ray: {len(todo)} of {len(shards)} shard(s) of up to {run.req.shard_size} images on {len(nodes)} node(s)"
        with console.progress(what, total=len(todo)) as bar:

            def done(_, result: dict) -> None:
                store.save(keys[result["index"]], result)
                results[result["index"]] = result
                computed.append(result)
                bar.advance()

            map_tasks(shard_task, [(job, s) for s in todo], executor="ray", ray_address=run.req.ray_address, on_done=done)
    except KeyboardInterrupt:
        kept = len(store.used)
        if kept:
            console.warn(f"interrupted: {kept} finished shard(s) are kept in {store.folder}; rerun with --resume to skip them")
        raise
    store.prune()
    summary = throughput(computed, len(shards), time.perf_counter() - t0, len(store.used) - len(computed))
    summary |= {"address": run.req.ray_address, "ship_data": run.req.ship_data, "shard_size": run.req.shard_size}
    print_throughput(summary)
    return [results[s.index] for s in shards], summary


def throughput(computed: list[dict], shards: int, wall: float, reused: int) -> dict:
    """Images/s per node (over the seconds its tasks ran, model loading included) and in all (over
    the wall time of the Ray phase); an image is one pass through Keras and every artifact."""
    nodes: dict[str, dict] = {}
    for r in computed:
        n = nodes.setdefault(
            r["node_id"], {"node_id": r["node_id"], "ip": r["ip"], "shards": 0, "images": 0, "busy_seconds": 0.0}
        )
        n["shards"] += 1
        n["images"] += r["count"]
        n["busy_seconds"] += r["seconds"]
        n["load_seconds"] = n.get("load_seconds", 0.0) + r["load_seconds"]
    for n in nodes.values():
        n["images_per_s"] = n["images"] / n["busy_seconds"] if n["busy_seconds"] else None
    images = sum(r["count"] for r in computed)
    return {
        "shards": shards,
        "computed": len(computed),
        "reused": reused,
        "images": images,
        "wall_seconds": wall,
        "images_per_s": images / wall if computed and wall else None,
        "nodes": sorted(nodes.values(), key=lambda n: (n["ip"], n["node_id"])),
    }


def print_throughput(s: dict) -> None:
    reused = f" ({s['reused']} reused from an earlier run)" if s["reused"] else ""
    console.info(
        f"Ray: computed {s['computed']} of {s['shards']} shards{reused}, {s['images']} images in {s['wall_seconds']:.1f} s"
    )
    for n in s["nodes"]:
        rate = f"{n['images_per_s']:.1f} images/s" if n["images_per_s"] else "—"
        console.info(
            f"  node {n['ip']} ({n['node_id'][:8]}): {n['shards']} shard(s), {n['images']} images, "
            f"{n['busy_seconds']:.1f} s busy ({n['load_seconds']:.1f} s loading models): {rate}"
        )
    if s["images_per_s"]:
        console.info(f"  total: {s['images_per_s']:.1f} images/s (each image through Keras and every artifact)")


# ------------------------------------------------------------------ after the shards
def _merge(results: list[dict], names: list[str], num_classes: int):
    """({model: (image indices, probabilities)}, {image: why undecodable}) over every shard."""
    import numpy as np

    failed = {i: why for r in results for i, why in r["failed"].items()}
    preds = {}
    for name in names:
        parts = [dense(r["predictions"][name], num_classes) for r in results]
        preds[name] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return preds, failed


def _keras(run, keras_cached, preds, failed, worker_shas: set, timing: dict) -> tuple[dict, object]:
    """The Keras result (its predictions from the shards, its latency timed here) and the image
    every latency is timed on."""
    from ..evaluation import KERAS as NAME
    from ..evaluation_keras import keras_result, load_model
    from ..preprocess import load_image

    idx, probs = preds[KERAS]
    if len(idx) == 0:
        raise BadInput(f"no image of {run.data.origin} could be decoded: {failed[0]}")
    x0 = load_image(run.data.files[int(idx[0])], run.spec)[None]
    if keras_cached:
        return keras_cached, x0
    src, predict, timing["model_load_seconds"] = load_model(run.req, run.spec, run.labels)
    if worker_shas - {src.sha256}:
        raise BadInput(
            f"--model {run.req.model}: the Ray workers ran another model than this host loads (sha256 "
            f"{sorted(worker_shas - {src.sha256})[0][:12]}… vs {src.sha256[:12]}…); give every node the same model, or pass --ship-data"
        )
    console.info(f"[{NAME}] predictions from the Ray shards; timing its latency here")
    keras = keras_result(run.req, src, predict, run.labels, run.data, idx, probs, failed, x0, timing["model_load_seconds"])
    if run.keras_key:
        run.store.save(NAME, run.keras_key, keras)
    return keras, x0


def _artifact_rows(run, todo: list, shared, preds: dict, timing: dict, k: int) -> tuple[dict, dict]:
    """Each artifact's row (its predictions from the shards, its latency timed here) and, with
    --device, its row on the device: (rows, device rows) by name, each saved as it is done."""
    from ..evaluation import artifact_row, row_base
    from ..runtime import open_artifact

    rows: dict = {}
    device_rows: dict = {}
    timing["artifact_seconds"] = {}
    for a in todo:
        t1 = time.perf_counter()
        rt = open_artifact(a.folder, manifest=a.manifest)
        load_ms = (time.perf_counter() - t1) * 1000
        console.info(f"[{a.name}] predictions from the Ray shards; timing its latency here")
        idx, probs = preds[a.name]
        base = row_base(a, rt)
        row = artifact_row(run, shared, base, rt, idx, probs, load_ms=load_ms, t1=t1)
        on_device = None if shared.feed is None else _device_row(run, a, rt, shared, (base, row), preds[a.name], k)
        run.store.save(a.name, run.art_keys[a.name], {"row": row, "device_row": on_device})
        rows[a.name] = dataclasses.replace(row, reused=False)
        timing["artifact_seconds"][a.name] = row.seconds
        if on_device is not None:
            device_rows[a.name] = on_device
    return rows, device_rows


# ------------------------------------------------------------------ --device
@contextlib.contextmanager
def _device_feed(run, todo: list):
    """Every image decoded here, once, by the toolkit's one decoder (as a local run decodes them),
    when artifacts go to a device; else None: without --device the driver decodes no image."""
    if run.device is None or not todo:
        yield None
        return
    from ..imagefeed import ImageFeed

    console.info(f"{run.device.spec.label}: decoding the {len(run.data.files)} images here, for the device")
    with ImageFeed(run.data.files, run.spec, workers=run.req.decode_threads) as feed:
        feed.wait(len(feed))
        yield feed


def _device_row(run, a, rt, shared, rows: tuple, pred: tuple, k: int):
    """The artifact's row on the device (``evaluation.on_device``, as a local run makes it). The
    device's parity needs this host's full outputs, and a shard holds each image's top-k only: the
    artifact runs here over the decoded images, and its top-k must be the shards' bit for bit
    (the same code in the same batches), else ShardMismatch naming the artifact."""
    import numpy as np

    from ..evaluation import _predict, on_device
    from .worker import top_k

    base, row = rows
    console.info(f"[{a.name}] predicting {len(shared.feed.decoded)} images here: the device's parity reference")
    idx, probs, _ = _predict(rt.predict, shared.feed, len(run.labels))
    want_idx, want = pred
    if not np.array_equal(idx, want_idx):
        raise ShardMismatch(
            f"{a.name}: this host decoded other images than the Ray workers ({len(idx)} vs {len(want_idx)} decodable); "
            "give every node the same files, or pass --ship-data"
        )
    got = dense(top_k(idx, probs, k), len(run.labels))[1]
    differ = int((got != want).any(axis=-1).sum())
    if differ:
        raise ShardMismatch(
            f"{a.name}: its top-{k} outputs on this host differ from the Ray shards' on {differ} of {len(idx)} images "
            "(a Ray node runs it with another CPU's kernels or another runtime version); run `evaluate --device` "
            "without --executor ray, or on nodes like this host"
        )
    return on_device(run, a, shared, base, row, idx, probs)
