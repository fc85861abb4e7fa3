"""`xception-edge bench ARTIFACT_DIR`: latency (and optionally accuracy) of one artifact, on the
device itself. Imports only numpy, Pillow and the artifact's own runtime (LiteRT for .tflite):
never TensorFlow, OpenVINO or ONNX Runtime unless the artifact is of that backend."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from . import console
from .accuracy import accuracy_report, agreement
from .artifact import read_manifest
from .dataset import labelled_images
from .errors import BadInput
from .hostinfo import cpu_flags, host
from .latency import measure, peak_rss_mb
from .preprocess import UndecodableImage, load_image
from .records import Manifest
from .runtime import open_artifact

SCHEMA = "xception-edge/bench"
SCHEMA_VERSION = 2  # 2: `device`, `latency_emulated`, and `parity` for runs on a device
_ARM = {"aarch64", "arm64", "armv8", "armv8l"}
_X86 = {"x86_64", "amd64", "x86", "i686"}


def cpu_mismatch(manifest: Manifest, *, machine: str | None = None, flags: list[str] | None = None) -> str | None:
    """Why latency measured here (or on a device with ``machine`` and int8 ``flags``) may not say
    much about the target's device, if it doesn't."""
    hw = (manifest.hardware or "any").lower()
    machine = (machine or platform.machine()).lower()
    if hw.startswith(("arm", "aarch")) and machine not in _ARM:
        return f"target {manifest.target} is made for {hw} CPUs but this is {machine}: latency here says little about the device"
    if hw.startswith("x86") and machine not in _X86:
        return f"target {manifest.target} is made for x86 CPUs but this is {machine}: latency here says little about the device"
    if manifest.precision == "int8":
        built = set(manifest.int8_flags)
        here = set(cpu_flags() if flags is None else flags)
        vnni = {"avx512_vnni", "avx_vnni", "amx_int8"}
        if hw.startswith("x86") and (built & vnni) != (here & vnni):
            return (
                f"int8 artifact converted on a CPU with {sorted(built & vnni) or 'no VNNI'}, running on one with "
                f"{sorted(here & vnni) or 'no VNNI'}: int8 speed and saturation behaviour differ"
            )
    return None


def run_bench(
    folder: Path,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    data: Path | None = None,
    reference: Path | None = None,
    rounds: int = 1,
    cooldown: float = 0.0,
) -> dict:
    if runs < 1:
        raise BadInput(f"--runs {runs} must be at least 1")
    if warmup < 0:
        raise BadInput(f"--warmup {warmup} must not be negative")
    manifest = read_manifest(folder)
    ref_preds = read_reference(reference) if reference is not None else None
    labels = list(manifest.labels)
    spec = manifest.preprocessing
    files: list[Path] = []
    if data is not None:
        images = labelled_images(data, labels)
        files, targets, root = list(images.files), list(images.targets), images.root
    warning = cpu_mismatch(manifest)
    if warning:
        console.warn(warning)

    t0 = time.perf_counter()
    rt = open_artifact(folder, threads=threads, manifest=manifest)
    load_ms = (time.perf_counter() - t0) * 1000
    if files:
        x = load_image(files[0], spec)[None]
    else:  # latency only: a fixed pseudo-image in the model's input range
        x = np.random.default_rng(0).uniform(-1, 1, (1, spec.height, spec.width, 3)).astype(np.float32)
    stats = measure_latency(
        rt, x, runs=runs, warmup=warmup, load_ms=load_ms, what=manifest.target, rounds=rounds, cooldown_s=cooldown
    )

    result = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "artifact": artifact_record(folder, manifest),
        "host": host(),
        "cpu_warning": warning,
        "kernels": rt.note,
        "latency": stats.to_dict(),
        "latency_emulated": False,
        "device": {"spec": "local", "transport": "in-process", "emulated": False},
    }
    if files:
        result.update(_accuracy(rt, files, targets, root, spec, labels, ref_preds))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def artifact_record(folder: Path, manifest: Manifest) -> dict:
    """The ``artifact`` object of a bench result."""
    return {
        "path": str(Path(folder).resolve()),
        "target": manifest.target,
        "backend": manifest.backend,
        "precision": manifest.precision,
        "size_bytes": manifest.model_bytes,
    }


def measure_latency(
    rt, x: np.ndarray, *, runs: int, warmup: int, load_ms: float, what: str, rounds: int = 1, cooldown_s: float = 0.0
):
    """LatencyStats of rt.invoke on one preprocessed float image x (1, H, W, 3), in the artifact's
    input dtype and batch: the one latency measurement of `bench` and `evaluate`."""
    how = f"{rounds} rounds, " if rounds > 1 else ""
    with console.progress(f"Timing {what}: {how}{warmup} warm-up + {runs} runs", total=None):
        return measure(rt, x, runs=runs, warmup=warmup, load_ms=load_ms, rounds=rounds, cooldown_s=cooldown_s)


def _accuracy(rt, files, targets, root: Path, spec, labels, ref_preds) -> dict:
    probs, kept, failed, pre_ms = [], [], [], []
    with console.progress(f"Predicting {len(files)} images", total=len(files)) as task:
        for path, target in zip(files, targets):
            t0 = time.perf_counter()
            try:
                x = load_image(path, spec)
            except UndecodableImage as exc:
                failed.append(str(exc))
                task.advance()
                continue
            pre_ms.append((time.perf_counter() - t0) * 1000)
            probs.append(rt.predict(x[None])[0])
            kept.append((path, target))
            task.advance()
    if failed:
        console.warn(f"{len(failed)} image(s) could not be decoded; counted as misses: {'; '.join(failed[:3])}")
    probs_a = np.stack(probs) if probs else np.empty((0, len(labels)), np.float32)
    predictions = {p.relative_to(root).as_posix(): labels[int(i)] for (p, _), i in zip(kept, probs_a.argmax(-1))}
    out: dict = {
        "preprocess_ms": {"p50": float(np.median(pre_ms)) if pre_ms else None, "images": len(pre_ms)},
        "predictions": predictions,
        "undecodable": failed,
    }
    if all(t is not None for t in targets):
        y = np.array([t for _, t in kept], dtype=np.int64)
        out["accuracy"] = accuracy_report(probs_a, y, labels, undecodable=len(failed))
    if ref_preds is not None:
        out["reference"] = agreement(predictions, ref_preds)
    return out


def read_reference(path: Path) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"--reference {path} cannot be read as JSON: {exc}") from None
    preds = data.get("predictions") if isinstance(data, dict) else None
    if not isinstance(preds, dict) or not preds:
        raise BadInput(f"--reference {path} has no 'predictions'; pass the --json output of `bench --data` on the fp32 artifact")
    return {str(k): str(v) for k, v in preds.items()}


def device_lines(result: dict) -> list[str]:
    """What `bench --device` adds to the table: the device, and parity with the host."""
    device = result.get("device") or {}
    if device.get("transport", "in-process") == "in-process":
        return []
    host = result["host"]
    core = f", {host['cpu_core']}" if host.get("cpu_core") else ""
    runtime = ", ".join(f"{k} {v}" for k, v in (device.get("runtime") or {}).items())
    lines = [f"device {device['spec']}: {host['machine']}{core}, {host.get('os', '')}, Python {host['python']}, {runtime}"]
    if result.get("latency_emulated"):
        lines.append(f"EMULATED ({device.get('cpu_model')} under QEMU): this latency says nothing about any device's speed")
    p = result.get("parity")
    if p:
        verdict = "ok" if p["passed"] else f"FAILED (below {p['min_agreement']:.0%})"
        lines.append(
            f"parity with the host on {p['images']} inputs: top-1 agreement {p['top1_agreement']:.2%} {verdict}, "
            f"max difference {p['max_step_diff']:g} output steps ({p['step_from']})"
        )
    return lines


def ci_text(lat: dict) -> str:
    """``[lo–hi]``: the 95% confidence interval of p50 (empty when too few runs give one)."""
    ci = lat.get("p50_ci_ms")
    return f"[{ci[0]:.2f}–{ci[1]:.2f}]" if isinstance(ci, list) and len(ci) == 2 else ""


def timing_text(lat: dict) -> str:
    """How the latency was measured: runs, warm-up, threads, and rounds with their p50s."""
    text = f"{lat['runs']} runs after {lat['warmup']} warm-up, {lat['threads']} thread(s)"
    rounds = lat.get("round_p50_ms") or []
    if len(rounds) > 1:
        rest = f", {lat['cooldown_s']:g} s cooldown before each" if lat.get("cooldown_s") else ""
        text += f", in {len(rounds)} rounds (p50 per round: {', '.join(f'{r:.2f}' for r in rounds)} ms{rest})"
    return text


def print_bench(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    lat = result["latency"]
    a = result["artifact"]
    t = Table(title=f"{a['target']} ({a['backend']} {a['precision']}, {a['size_bytes'] / 1e6:.2f} MB)")
    for col in ("p50 [95% CI]", "p90", "p99", "mean ± std", "min", "max", "load", "first", "peak RSS"):
        t.add_column(col, justify="right")
    t.add_row(
        f"{lat['p50_ms']:.2f} ms {ci_text(lat)}",
        f"{lat['p90_ms']:.2f}",
        f"{lat['p99_ms']:.2f}",
        f"{lat['mean_ms']:.2f} ± {lat['std_ms']:.2f}",
        f"{lat['min_ms']:.2f}",
        f"{lat['max_ms']:.2f}",
        f"{lat['load_ms']:.0f} ms",
        f"{lat['first_inference_ms']:.1f} ms",
        f"{result['peak_rss_mb']:.0f} MB",
    )
    con = Console(width=None if Console().is_terminal else 160)
    con.print(t)
    con.print(f"{timing_text(lat)}, on {result['host']['cpu']}", highlight=False)
    for line in device_lines(result):
        con.print(line, highlight=False)
    if "accuracy" in result:
        acc = result["accuracy"]
        skipped = f" ({acc['undecodable']} undecodable, counted as misses)" if acc["undecodable"] else ""
        con.print(f"top-1 {acc['top1']:.2%}  top-5 {acc['top5']:.2%}  on {acc['images']} images{skipped}", highlight=False)
    if "reference" in result:
        r = result["reference"]
        con.print(
            f"agreement with reference {r['agreement']:.2%} on {r['images']} images; {len(r['flipped'])} flipped", highlight=False
        )
