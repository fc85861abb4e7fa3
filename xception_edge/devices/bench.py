"""``bench ARTIFACT --device SPEC``: the artifact's latency on the device, with the same timing
loop as ``bench`` on the host, and device-vs-host parity on the same inputs. The result has
``bench``'s JSON schema; ``host`` is the device's, ``device`` says which device, and an emulated
device's latency is marked ``latency_emulated`` (no gate may use it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import console
from ..artifact import read_manifest
from ..benchmark import SCHEMA, SCHEMA_VERSION, artifact_record, cpu_mismatch, read_reference
from ..records import Manifest
from ..runtime import open_artifact
from . import parity, remote
from .spec import DeviceSpec, parse


def _data_inputs(manifest: Manifest, data: Path) -> tuple[np.ndarray, list, dict]:
    """Every image of ``data``, preprocessed here (the device needs no Pillow)."""
    from ..dataset import labelled_images
    from ..preprocess import UndecodableImage, load_image

    images = labelled_images(data, list(manifest.labels))
    xs, kept, failed = [], [], []
    for path, target in zip(images.files, images.targets):
        try:
            xs.append(load_image(path, manifest.preprocessing))
            kept.append((path.relative_to(images.root).as_posix(), target))
        except UndecodableImage as exc:
            failed.append(str(exc))
    if failed:
        console.warn(f"{len(failed)} image(s) could not be decoded; counted as misses: {'; '.join(failed[:3])}")
    shape = (0, manifest.preprocessing.height, manifest.preprocessing.width, 3)
    return (np.stack(xs) if xs else np.empty(shape, np.float32)), kept, {"undecodable": failed}


def _accuracy(manifest: Manifest, probs: np.ndarray, kept: list, extra: dict, ref_preds: dict | None) -> dict:
    from ..accuracy import accuracy_report, agreement

    labels = list(manifest.labels)
    predictions = {key: labels[int(i)] for (key, _), i in zip(kept, probs.argmax(-1))}
    out = {"predictions": predictions, **extra}
    if kept and all(t is not None for _, t in kept):
        y = np.array([t for _, t in kept], dtype=np.int64)
        out["accuracy"] = accuracy_report(probs, y, labels, undecodable=len(extra["undecodable"]))
    if ref_preds is not None:
        out["reference"] = agreement(predictions, ref_preds)
    return out


def _host_outputs(folder: Path, inputs: np.ndarray) -> tuple[np.ndarray, dict]:
    """The host's outputs of ``folder``'s artifact on ``inputs``, and what produced them."""
    rt = open_artifact(folder)
    from ..hostinfo import host

    info = host()
    return rt.predict(inputs), {"target": rt.manifest.target, "machine": info["machine"], "cpu": info["cpu"], "kernels": rt.note}


def bench_on_device(
    folder: Path,
    device: str | DeviceSpec,
    timing: remote.Timing | None = None,
    *,
    data: Path | None = None,
    reference: Path | None = None,
    device_python: str | None = None,
    keep: bool = False,
    parity_reference: Path | None = None,
    cache: Path | None = None,
) -> dict:
    """Bench ``folder`` on ``device`` and compare its outputs with the host's outputs of
    ``parity_reference`` (default: the same artifact) on the same inputs."""
    spec = device if isinstance(device, DeviceSpec) else parse(device)
    timing = (timing or remote.Timing()).check()
    manifest = read_manifest(folder)
    ref_preds = read_reference(reference) if reference is not None else None
    pre = manifest.preprocessing
    if data is not None:
        inputs, kept, extra = _data_inputs(manifest, Path(data))
        what = f"{len(inputs)} images of {data}"
    else:
        inputs, what = parity.pseudo_images(pre.height, pre.width), f"{parity.DEFAULT_IMAGES} pseudo-random images (seed 0)"
    opened = remote.open_device(spec, manifest.backend, python=device_python, keep=keep, cache=cache)
    found, outputs = remote.run(opened, Path(folder), manifest, inputs, timing)
    host_out, host_ref = _host_outputs(Path(parity_reference or folder), inputs)
    dev_host = found["host"]
    warning = cpu_mismatch(manifest, machine=dev_host["machine"], flags=dev_host.get("int8_flags", []))
    if warning:
        console.warn(warning)
    result = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "artifact": artifact_record(Path(folder), manifest),
        "host": dev_host,
        "cpu_warning": warning,
        "kernels": found.get("kernels"),
        "latency": found["latency"],
        "latency_emulated": spec.emulated,
        "device": {**opened.facts, "cpu_core": dev_host.get("cpu_core"), "runtime": dev_host.get("runtime", {})},
        "parity": parity.compare(host_out, outputs, manifest.output, inputs=what, reference=host_ref),
    }
    if data is not None:
        result.update(_accuracy(manifest, outputs, kept, extra, ref_preds))
    result["peak_rss_mb"] = found.get("peak_rss_mb")
    return result
