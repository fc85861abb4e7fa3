"""Latency measurement around a runtime's invoke alone (numpy + stdlib only: runs on devices)."""

from __future__ import annotations

import dataclasses
import resource
import sys
import time

import numpy as np

from .errors import BadInput


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    runs: int
    warmup: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    load_ms: float  # open the artifact: read, compile, allocate
    first_inference_ms: float
    samples_ms: tuple[float, ...]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["samples_ms"] = [round(x, 4) for x in self.samples_ms]
        return d


def summarize(samples_ms: list[float], *, warmup: int, threads: int, load_ms: float, first_ms: float) -> LatencyStats:
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(
        len(a),
        warmup,
        threads,
        float(p50),
        float(p90),
        float(p99),
        float(a.mean()),
        float(a.std()),
        float(a.min()),
        float(a.max()),
        float(load_ms),
        float(first_ms),
        tuple(float(x) for x in a),
    )


def time_invoke(invoke, x: np.ndarray, *, runs: int, warmup: int) -> tuple[float, list[float]]:
    """First-inference time, then ``warmup`` untimed runs, then ``runs`` timed runs of invoke(x)."""
    if runs < 1:
        raise BadInput(f"--runs {runs} must be at least 1")
    if warmup < 0:
        raise BadInput(f"--warmup {warmup} must not be negative")
    t0 = time.perf_counter()
    invoke(x)
    first = (time.perf_counter() - t0) * 1000
    for _ in range(max(warmup - 1, 0)):
        invoke(x)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        invoke(x)
        samples.append((time.perf_counter() - t0) * 1000)
    return first, samples


def measure(rt, x: np.ndarray, *, runs: int, warmup: int, load_ms: float) -> LatencyStats:
    """LatencyStats of ``rt.invoke`` (an opened Runtime) on one preprocessed float image x
    (1, H, W, 3), in the artifact's input dtype and batch: the one timing loop of ``bench`` and
    ``evaluate``, on the host and on devices."""
    from .runtime.base import quantize

    batch = quantize(np.repeat(x, rt.batch_size, axis=0), rt.input_spec)
    first_ms, samples = time_invoke(rt.invoke, batch, runs=runs, warmup=warmup)
    return summarize(samples, warmup=warmup, threads=rt.threads, load_ms=load_ms, first_ms=first_ms)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)
