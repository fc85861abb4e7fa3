"""Post-conversion verification: run the artifact with its own runtime on held-back images and
compare with the source model. A collapsed model is never written as a success.

Agreement counts an image as agreeing when the artifact's top-1 class is the source model's
top-1, or is tied with it within one step of the artifact's output quantization (an int8
softmax cannot tell apart probabilities closer than its scale). ``strict_agreement`` is plain
top-1 equality. A collapsed model also moves the probabilities, so ``max_abs_diff`` shows it.

When the source model itself is undecided (mean top-1 probability near 1 / classes, as with
random weights: below 1.5 / classes), top-1 is decided by noise and says nothing; the check then gates on the
probabilities instead: max |Δp| must stay within max(1 / classes, 0.01) (mode "distribution"),
which an int8 output (step 1/256) can keep and a collapse onto a few classes cannot.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .records import Verification
from .runtime.base import Runtime


def is_undecided(reference: np.ndarray) -> bool:
    """The source model's mean top-1 probability is near chance (untrained weights)."""
    return float(reference.max(-1).mean()) < 1.5 / reference.shape[-1]


def compare(
    reference: np.ndarray, candidate: np.ndarray, floor: float, images_from: str, tie_tolerance: float = 0.0
) -> Verification:
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: source {reference.shape}, artifact {candidate.shape}")
    if len(reference) == 0:
        raise ValueError("no verification images")
    ref = reference.astype(np.float64)
    diff = np.abs(ref - candidate.astype(np.float64))
    ref_top = ref.argmax(-1)
    cand_top = candidate.argmax(-1)
    strict = ref_top == cand_top
    rows = np.arange(len(ref))
    tied = ref[rows, cand_top] >= ref[rows, ref_top] - tie_tolerance
    classes = ref.shape[-1]
    undecided = is_undecided(ref)
    return Verification(
        images=int(len(ref)),
        agreement=float(np.mean(strict | tied)),
        strict_agreement=float(np.mean(strict)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        floor=float(floor),
        images_from=images_from,
        reference_max_prob=float(ref.max(-1).mean()),
        mode="distribution" if undecided else "top1",
        max_abs_diff_limit=max(1.0 / classes, 0.01) if undecided else None,
    )


def verify(runtime: Runtime, images: np.ndarray, reference: np.ndarray, floor: float, images_from: str) -> Verification:
    out = runtime.output_spec
    tol = out.scale if out.quantized else 0.0
    result = compare(reference, runtime.predict(images), floor, images_from, tie_tolerance=tol)
    return dataclasses.replace(result, kernels=runtime.note) if runtime.note else result
