"""How far a top-1 drop can be trusted (numpy and the standard library only): a paired-bootstrap
confidence interval of the drop, and McNemar's exact test on the images the two models disagree
on. Both read only the per-image differences d = artifact correct − reference correct, which is
-1 (lost: the reference right, the artifact wrong), 0 or +1 (gained: the reverse)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

CI_LEVEL = 0.95
RESAMPLES = 10_000
SEED = 0
_EXACT_UP_TO = 5_000  # McNemar with b + c up to this: exact integers; above: log space (relative error ~1e-10)


def discordant(correct_artifact, correct_reference) -> tuple[int, int, int]:
    """(images, lost, gained) of two boolean per-image correctness arrays over the same images."""
    a = np.asarray(correct_artifact, dtype=bool)
    r = np.asarray(correct_reference, dtype=bool)
    if a.shape != r.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D arrays over the same images, got shapes {a.shape} and {r.shape}")
    return int(a.size), int(np.count_nonzero(r & ~a)), int(np.count_nonzero(a & ~r))


def paired_bootstrap_drop_ci(
    correct_artifact, correct_reference, *, level: float = CI_LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """The ``level`` percentile interval, in percentage points, of 100 × (top-1 of the artifact −
    top-1 of the reference) over ``resamples`` bootstrap resamples of the images (the same images
    for both models: paired). Deterministic for a seed."""
    images, lost, gained = discordant(correct_artifact, correct_reference)
    return drop_ci_from_counts(images, lost, gained, level=level, resamples=resamples, seed=seed)


def drop_ci_from_counts(
    images: int, lost: int, gained: int, *, level: float = CI_LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """``paired_bootstrap_drop_ci`` from the counts alone. A resample of n images draws each image
    with probability 1/n, so its counts of d = -1, 0, +1 are Multinomial(n, [lost, same, gained] / n):
    drawing those counts is the same distribution as drawing indices, in O(resamples) whatever n."""
    if images <= 0 or lost < 0 or gained < 0 or lost + gained > images:
        raise ValueError(f"need 0 ≤ lost + gained ≤ images and images > 0, got {images=}, {lost=}, {gained=}")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples ≥ 1, got {level=}, {resamples=}")
    if lost == 0 and gained == 0:
        return 0.0, 0.0  # every resample has d = 0
    rng = np.random.default_rng(seed)
    p = np.array([lost, images - lost - gained, gained], dtype=np.float64) / images
    counts = rng.multinomial(images, p, size=resamples)
    drops = 100.0 * (counts[:, 2] - counts[:, 0]) / images
    tail = (1 - level) / 2
    low, high = np.quantile(drops, [tail, 1 - tail])
    return float(low) + 0.0, float(high) + 0.0  # + 0.0: no -0.0


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b = images the reference got right and the artifact wrong,
    c = the reverse. Under "no difference" each of the n = b + c discordant images is lost or
    gained with probability ½: p = min(1, 2 · Σ_{i ≤ min(b, c)} C(n, i) / 2^n); 1 when n = 0."""
    if isinstance(b, bool) or isinstance(c, bool) or b < 0 or c < 0 or int(b) != b or int(c) != c:
        raise ValueError(f"b and c must be counts (whole numbers ≥ 0), got {b!r} and {c!r}")
    b, c = int(b), int(c)
    n, k = b + c, min(b, c)
    if n == 0 or 2 * k >= n:
        return 1.0  # b == c: the tail holds at least half of the mass
    if n <= _EXACT_UP_TO:
        return _exact_tail(n, k)
    return _log_tail(n, k)


def _exact_tail(n: int, k: int) -> float:
    total, term = 0, 1  # term = C(n, i), an exact integer
    for i in range(k + 1):
        total += term
        term = term * (n - i) // (i + 1)
    return float(min(Fraction(1), Fraction(2 * total, 2**n)))


def _log_tail(n: int, k: int) -> float:
    i = np.arange(k + 1)
    lg = np.array([math.lgamma(x + 1) for x in range(n + 1)])  # log(x!) for x = 0..n
    log_terms = lg[n] - lg[i] - lg[n - i]  # log C(n, i)
    top = log_terms.max()
    log_p = math.log(2) + top + math.log(np.exp(log_terms - top).sum()) - n * math.log(2)
    return min(1.0, math.exp(log_p))
