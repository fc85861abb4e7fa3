"""The worker side of `evaluate --executor ray`: one Ray task per shard of the labelled images.

A task decodes its images with the toolkit's one preprocessing (``ImageFeed``, as a local run),
runs the Keras reference and every artifact over them with the same ``_predict`` a local run
uses, in the same batches (a shard starts at a multiple of the batch), and returns each image's
top-k class indices and probabilities. Before an artifact is used here its files are checked
against its manifest's sha256 values, and its manifest against the driver's (``read_manifest``);
the Keras model against the driver's sha256. Models stay loaded in the worker process for the
next shard of the same job.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..preprocess import PreprocessSpec

KERAS = "keras-fp32"
SHIP_HINT = "put it where every node sees it at the same path (a shared filesystem), or pass --ship-data"
_loaded: dict = {}  # this worker process's models: {job key: (predictors, model sha256)}


@dataclasses.dataclass(frozen=True)
class ArtifactRef:
    name: str
    folder: str  # as the driver sees it
    manifest_sha256: str
    blob: object | None = None  # --ship-data: an ObjectRef of {relative path: bytes}


@dataclasses.dataclass(frozen=True)
class Job:
    """What every shard of one evaluation needs (small: shipped files travel as ObjectRefs)."""

    model: str
    model_sha256: str | None  # None: keras:xception, known once built
    unsafe_model: bool
    spec: PreprocessSpec
    labels: tuple[str, ...]
    artifacts: tuple[ArtifactRef, ...]
    model_blob: object | None = None
    top_k: int = 5

    @property
    def key(self) -> str:
        return repr(
            (self.model, self.model_sha256, [(a.name, a.folder, a.manifest_sha256, a.blob is None) for a in self.artifacts])
        )


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int
    start: int  # index of its first image in the data list (a multiple of the batch)
    files: tuple[str, ...]  # as the driver names them (in decoding errors, as a local run)
    paths: tuple[str, ...]  # absolute: where every node reads them
    blobs: tuple[bytes, ...] | None = None  # --ship-data: the files' bytes


class _Named(io.BytesIO):
    """Shipped image bytes that print as their file's path, so a decoding error reads as a local run's."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self._name = name

    def __str__(self) -> str:
        return self._name


def where() -> tuple[str, str]:
    """(node id, node address) of this worker."""
    import ray

    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()


def not_visible(what: str, path: str, problem: str) -> BadInput:
    node_id, ip = where()
    return BadInput(f"Ray node {ip} (node {node_id[:8]}) cannot read {what} {path}: {problem}; {SHIP_HINT}")


def top_k(idx: np.ndarray, probs: np.ndarray, k: int) -> dict:
    """Each image's k highest classes (ties to the lower index, as the scoring's stable sort) and
    their probabilities: all that top-1/top-5 and agreement are computed from."""
    k = min(k, probs.shape[-1])
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return {"idx": idx.astype(np.int64), "top": top.astype(np.int32), "p": np.take_along_axis(probs, top, -1).astype(np.float32)}


def shard_task(item: tuple[Job, Shard]) -> dict:
    """One Ray task: ``run_shard(job, shard)`` (a plain function of one item, as ``map_tasks`` takes).
    Bad input found on the worker (e.g. a runtime not installed there) comes back as a plain
    BadInput naming the node."""
    try:
        return run_shard(*item)
    except BadInput as exc:
        if str(exc).startswith("Ray node "):
            raise
        node_id, ip = where()
        raise BadInput(f"Ray node {ip} (node {node_id[:8]}): {exc}") from None


def run_shard(job: Job, shard: Shard) -> dict:
    """Every model over one shard: {"predictions": {model: top_k(...)}, "failed": {image: why}, …}."""
    from ..evaluation import _predict
    from ..imagefeed import ImageFeed

    t0 = time.perf_counter()
    models, model_sha, load_seconds = _models(job)
    inputs = _inputs(shard)
    predictions = {}
    with ImageFeed(inputs, job.spec, workers=0) as feed:
        for name, predict in models.items():
            idx, probs, _ = _predict(predict, feed, len(job.labels))
            predictions[name] = top_k(idx + shard.start, probs, job.top_k)
        failed = {shard.start + i: why for i, why in feed.failed.items()}
    node_id, ip = where()
    return {
        "index": shard.index,
        "start": shard.start,
        "count": len(shard.files),
        "predictions": predictions,
        "failed": failed,
        "model_sha256": model_sha,
        "node_id": node_id,
        "ip": ip,
        "seconds": time.perf_counter() - t0,
        "load_seconds": load_seconds,
    }


def _inputs(shard: Shard) -> list[_Named]:
    """The shard's images as named bytes: decoded as a local run decodes the files."""
    if shard.blobs is not None:
        return [_Named(b, f) for b, f in zip(shard.blobs, shard.files)]
    out = []
    for name, path in zip(shard.files, shard.paths):
        try:
            with open(path, "rb") as f:
                out.append(_Named(f.read(), name))
        except OSError as exc:
            raise not_visible("the image", path, exc.strerror or type(exc).__name__) from None
    return out


def _models(job: Job) -> tuple[dict, str, float]:
    """({model name: predict}, the Keras model's sha256, seconds spent loading now), loaded once per
    worker process and job."""
    if job.key in _loaded:
        return (*_loaded[job.key], 0.0)
    from ..evaluation_keras import load_model
    from ..runtime import open_artifact

    _loaded.clear()  # one job's models at a time
    t0 = time.perf_counter()
    model = _model_path(job)
    src, predict, _ = load_model(_ModelRequest(model, job.unsafe_model), job.spec, list(job.labels))
    if job.model_sha256 and src.sha256 != job.model_sha256:
        node_id, ip = where()
        raise BadInput(
            f"Ray node {ip} (node {node_id[:8]}): --model {job.model} there is another model (sha256 {src.sha256[:12]}…, "
            f"the driver's is {job.model_sha256[:12]}…); give every node the same file, or pass --ship-data"
        )
    predictors = {KERAS: predict}
    for a in job.artifacts:
        folder, manifest = _verified(a)
        predictors[a.name] = open_artifact(folder, manifest=manifest).predict
    _loaded[job.key] = (predictors, src.sha256)
    return predictors, src.sha256, time.perf_counter() - t0


@dataclasses.dataclass(frozen=True)
class _ModelRequest:
    model: str
    unsafe_model: bool


def _model_path(job: Job) -> str:
    if job.model_blob is not None:
        return str(materialize(job.model_blob, job.model_sha256, Path(job.model).name))
    if job.model_sha256 and not os.path.exists(job.model):
        raise not_visible("--model", job.model, "no such file or folder here")
    return job.model


def _verified(a: ArtifactRef):
    """(folder, manifest) of an artifact here, every file checked against its manifest's sha256 and
    the manifest against the one the driver read."""
    from ..artifact import MANIFEST, read_manifest
    from ..hashing import sha256_file

    folder = materialize(a.blob, a.manifest_sha256, a.name) if a.blob is not None else Path(a.folder)
    if not (folder / MANIFEST).is_file():
        raise not_visible("the artifact", str(folder), f"no {MANIFEST} here")
    manifest = read_manifest(folder)  # every file listed with its sha256, each checked: BadInput otherwise
    if sha256_file(folder / MANIFEST) != a.manifest_sha256:
        node_id, ip = where()
        raise BadInput(
            f"Ray node {ip} (node {node_id[:8]}): the artifact {folder} there is not the driver's (its manifest's "
            "sha256 differs); give every node the same files, or pass --ship-data"
        )
    return folder, manifest


def materialize(ref, key: str, name: str) -> Path:
    """Shipped files ({relative path: bytes} behind ``ref``) written once per node and ``key``
    under the temporary folder: renamed into place whole, so a reader never sees half of them."""
    import ray

    root = Path(tempfile.gettempdir()) / "xception-edge-ray" / key[:16]
    final = root / name
    if final.exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".xe-tmp-", dir=root))
    for rel, data in ray.get(ref).items():
        path = tmp / name / rel if rel else tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    try:
        os.rename(tmp / name, final)
    except OSError:  # another process of this node was first: use its copy (checked all the same)
        pass
    return final


def check_paths(paths: list[tuple[str, str]]) -> list[str]:
    """On one node: a problem line for each (what, path) it cannot read."""
    problems = []
    for what, path in paths:
        if not os.path.exists(path):
            problems.append(f"{what} {path}: no such file or folder")
        elif not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
            problems.append(f"{what} {path}: not readable")
    return problems
