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
    p50_ci_ms: tuple[float, float] | None = None  # 95% confidence interval of p50 (order statistics)
    rounds: int = 1
    round_p50_ms: tuple[float, ...] = ()  # each round's p50: drift between rounds is heat or load
    cooldown_s: float = 0.0  # the pause before each round

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["samples_ms"] = [round(x, 4) for x in self.samples_ms]
        d["p50_ci_ms"] = None if self.p50_ci_ms is None else [round(x, 4) for x in self.p50_ci_ms]
        d["round_p50_ms"] = [round(x, 4) for x in self.round_p50_ms]
        return d


CI_LEVEL = 0.95


def median_ci(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """A distribution-free confidence interval of the median: the order statistics x(j) and x(k)
    with P(j <= B < k) >= level for B ~ Binomial(n, 1/2) (no normality assumed; latency is
    skewed). None when n is too small for the level (n < 6 at 95%)."""
    import math

    a = np.sort(np.asarray(samples, np.float64))
    n = len(a)
    cdf, acc = [], 0.0
    for i in range(n + 1):
        acc += math.comb(n, i) / 2.0**n
        cdf.append(acc)
    tail = (1 - level) / 2
    j = max((i for i in range(n + 1) if cdf[i] <= tail), default=None)  # P(B <= j) <= tail
    if j is None:
        return None
    k = n - 1 - j  # symmetric: x(j) .. x(n-1-j), 0-based
    if j >= k:
        return None
    return float(a[j]), float(a[k])


def summarize(
    samples_ms: list[float],
    *,
    warmup: int,
    threads: int,
    load_ms: float,
    first_ms: float,
    rounds: tuple[list[float], ...] = (),
    cooldown_s: float = 0.0,
) -> LatencyStats:
    """The statistics of ``samples_ms`` (every round's samples, in order)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    round_p50 = tuple(float(np.median(r)) for r in rounds if len(r)) if len(rounds) > 1 else ()
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
        median_ci(a),
        max(len(rounds), 1),
        round_p50,
        float(cooldown_s),
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


def split_runs(runs: int, rounds: int) -> list[int]:
    """``runs`` timed runs dealt into ``rounds`` rounds as evenly as possible."""
    if rounds < 1:
        raise BadInput(f"--rounds {rounds} must be at least 1")
    if rounds > runs:
        raise BadInput(f"--rounds {rounds} is more than --runs {runs}; every round needs a timed run")
    return [runs // rounds + (i < runs % rounds) for i in range(rounds)]


def measure(
    rt, x: np.ndarray, *, runs: int, warmup: int, load_ms: float, rounds: int = 1, cooldown_s: float = 0.0
) -> LatencyStats:
    """LatencyStats of ``rt.invoke`` (an opened Runtime) on one preprocessed float image x
    (1, H, W, 3), in the artifact's input dtype and batch: the one timing loop of ``bench`` and
    ``evaluate``, on the host and on devices. With ``rounds`` > 1 the timed runs are dealt into
    rounds, each after ``cooldown_s`` seconds of rest and the warm-up again."""
    from .runtime.base import quantize

    if cooldown_s < 0:
        raise BadInput(f"--cooldown {cooldown_s} must not be negative")
    sizes = split_runs(runs, rounds)
    batch = quantize(np.repeat(x, rt.batch_size, axis=0), rt.input_spec)
    parts, first_ms = [], 0.0
    for i, n in enumerate(sizes):
        if cooldown_s:  # the first one is the rest after the previous artifact
            time.sleep(cooldown_s)
        first, samples = time_invoke(rt.invoke, batch, runs=n, warmup=warmup)
        first_ms = first if i == 0 else first_ms
        parts.append(samples)
    every = [s for part in parts for s in part]
    return summarize(
        every, warmup=warmup, threads=rt.threads, load_ms=load_ms, first_ms=first_ms, rounds=tuple(parts), cooldown_s=cooldown_s
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)
