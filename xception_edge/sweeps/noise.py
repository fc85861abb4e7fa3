"""How far a sweep's spread over seeds can be told from noise, and the calibration size it
recommends. Two cells are compared on the same validation images with the paired bootstrap of
``stats`` (the interval ``evaluate`` gives a drop), from their per-image correctness:

- a size is **within noise** when the 95% interval of top-1(best seed) − top-1(worst seed)
  contains 0: its seeds cannot be told apart on these images (the interval's half-width is the
  noise at that size);
- it is **not worse** than the grid's largest size when, for each seed, the interval of
  top-1(this size) − top-1(the largest size, same seed: its calibration images start with these)
  reaches 0;
- it is **stable** when both hold and every seed's conversion succeeded (at least 2 seeds).

The recommendation is the smallest size from which every larger size of the grid is stable, for
every method and transforms of the grid."""

from __future__ import annotations

import numpy as np

from ..stats import CI_LEVEL, RESAMPLES, SEED, discordant, drop_ci_from_counts

RULE = (
    "the smallest calibration size from which every larger size in the grid is stable for every method and "
    "transforms: all its seeds converted, the 95% paired-bootstrap interval of top-1 (best seed - worst seed) "
    "contains 0 (the spread is within noise), and no seed's interval of top-1 (this size - the largest size, same "
    "seed) lies below 0"
)


def _correct(cell: dict, label_of: dict[str, str]) -> np.ndarray:
    preds = cell["predictions"]
    return np.array([preds.get(k) == label for k, label in label_of.items()], dtype=bool)


def _interval(a: np.ndarray, b: np.ndarray) -> list[float]:
    """95% interval, in percentage points, of top-1(a) − top-1(b) over the same images."""
    images, lost, gained = discordant(a, b)
    low, high = drop_ci_from_counts(images, lost, gained)
    return [low, high]


def _stats(values: list[float]) -> dict:
    v = 100 * np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else None,
    }


def _size_summary(cells: list[dict], largest: dict[int, dict], label_of: dict[str, str]) -> dict:
    """One size of one method/transforms: top-1 and agreement over its seeds (in %), the spread, its interval,
    and the comparison with the largest size."""
    ok = [c for c in cells if c["ok"]]
    out = {"seeds": len(cells), "converted": len(ok), "top1": None, "agreement": None}
    if not ok:
        return {**out, "spread_pp": None, "spread_ci_pp": None, "noise_pp": None, "within_noise": False, "not_worse": False}
    correct = {c["seed"]: _correct(c, label_of) for c in ok}
    best = max(ok, key=lambda c: c["top1"])
    worst = min(ok, key=lambda c: c["top1"])
    ci = _interval(correct[best["seed"]], correct[worst["seed"]])
    vs = {
        seed: _interval(correct[seed], _correct(largest[seed], label_of))
        for seed in correct
        if seed in largest and largest[seed]["ok"]
    }
    return {
        **out,
        "top1": _stats([c["top1"] for c in ok]),
        "agreement": _stats([c["agreement"] for c in ok]),
        "spread_pp": 100 * (best["top1"] - worst["top1"]),
        "spread_ci_pp": ci,
        "noise_pp": (ci[1] - ci[0]) / 2,
        "within_noise": len(ok) >= 2 and ci[0] <= 0,
        "vs_largest_ci_pp": {str(s): v for s, v in vs.items()},
        "not_worse": bool(vs) and all(v[1] >= 0 for v in vs.values()),
    }


def summarize(cells: list[dict], label_of: dict[str, str]) -> list[dict]:
    """One entry per method, transforms and size (in the grid's order), with its stability."""
    groups: dict = {}
    for c in cells:
        groups.setdefault((c["method"], tuple(c["transforms"])), {}).setdefault(c["size"], []).append(c)
    out = []
    for (method, transforms), by_size in groups.items():
        top = max(by_size)
        largest = {c["seed"]: c for c in by_size[top]}
        for size in sorted(by_size):
            s = _size_summary(by_size[size], largest, label_of)
            stable = s["converted"] == s["seeds"] and s["within_noise"] and s["not_worse"]
            out.append({"method": method, "transforms": list(transforms), "size": size, **s, "stable": stable})
    return out


def recommend(summary: list[dict], images: int, seeds: int) -> dict:
    """The recommended size (None when the grid cannot tell), why, and how noise was judged."""
    noise = (
        f"{int(CI_LEVEL * 100)}% paired-bootstrap interval ({RESAMPLES} resamples, seed {SEED}) of the top-1 difference "
        f"between two cells on the same {images} validation images"
    )
    base = {"rule": RULE, "noise": noise, "groups": []}
    if seeds < 2:
        return {**base, "size": None, "reason": "one seed per size: add seeds (e.g. seed = [0, 1, 2]) to measure the spread"}
    groups: dict = {}
    for s in summary:
        groups.setdefault((s["method"], tuple(s["transforms"])), []).append(s)
    unstable = []
    for (method, transforms), sizes in groups.items():
        size = None
        for s in reversed(sizes):  # from the largest size down, while stable
            if not s["stable"]:
                break
            size = s["size"]
        base["groups"].append({"method": method, "transforms": list(transforms), "size": size})
        if size is None:
            unstable.append(f"method {method} with transforms {'+'.join(transforms) or 'none'}")
    if unstable:
        reason = (
            f"the largest size is not stable for {'; '.join(unstable)}: add larger sizes or more validation images "
            "(they narrow the intervals)"
        )
        return {**base, "size": None, "reason": reason}
    size = max(g["size"] for g in base["groups"])
    at = [s for s in summary if s["size"] == size]
    worst = max(at, key=lambda s: s["spread_pp"])
    low, high = worst["spread_ci_pp"]
    reason = (
        f"from size {size} up, the seeds' top-1 cannot be told apart (largest spread {worst['spread_pp']:.2f} pp at size "
        f"{size}, 95% interval [{low:+.2f}, {high:+.2f}]) and no seed is worse than at size {max(s['size'] for s in summary)}; "
        f"one validation image is {100 / images:.2f} pp"
    )
    return {**base, "size": size, "reason": reason}
