"""Top-1 / top-5, per class, and agreement/flips between two prediction sets (numpy only)."""

from __future__ import annotations

import numpy as np


def topk_hits(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether each label is among the k highest classes. Ties (common in int8 outputs, whose
    probabilities are multiples of 1/256) go to the lower class index, as argmax does."""
    k = min(k, probs.shape[-1])
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=-1)


def accuracy_report(
    probs: np.ndarray, labels: np.ndarray, class_names: list[str], *, undecodable: int = 0, undecodable_labels=None
) -> dict:
    """Top-1/top-5 overall and per class. Undecodable images stay in the denominator as misses;
    given their labels (``undecodable_labels``), in their class's denominator too."""
    missed = np.asarray(undecodable_labels if undecodable_labels is not None else [], dtype=np.int64)
    undecodable = max(undecodable, len(missed))
    total = len(labels) + undecodable
    top1 = topk_hits(probs, labels, 1)
    top5 = topk_hits(probs, labels, 5)
    per_class = {}
    for i, name in enumerate(class_names):
        mask = labels == i
        n = int(mask.sum() + (missed == i).sum())
        if n:
            per_class[name] = {"images": n, "top1": float(top1[mask].sum() / n), "top5": float(top5[mask].sum() / n)}
    return {
        "images": int(total),
        "undecodable": int(undecodable),
        "top1": float(top1.sum() / total) if total else float("nan"),
        "top5": float(top5.sum() / total) if total else float("nan"),
        "per_class": per_class,
    }


def agreement(pred: dict[str, str], reference: dict[str, str]) -> dict:
    """Top-1 agreement between two {image: class} maps over their common images, and the flips."""
    common = sorted(set(pred) & set(reference))
    flips = [{"image": k, "reference": reference[k], "prediction": pred[k]} for k in common if pred[k] != reference[k]]
    return {
        "images": len(common),
        "agreement": (1 - len(flips) / len(common)) if common else float("nan"),
        "flipped": flips,
        "missing_from_reference": len(set(pred) - set(reference)),
    }


def paired_drop(pred: dict[str, str], reference: dict[str, str], label_of: dict[str, str]) -> dict:
    """How far the top-1 drop of ``pred`` against ``reference`` can be trusted, over every image of
    ``label_of`` (image -> true class; an image missing from a prediction map, e.g. undecodable, is a
    miss for that model, as top-1 counts it): ``lost`` (reference right, ``pred`` wrong),
    ``gained`` (the reverse), ``drop_ci_pp`` (the paired-bootstrap 95% interval of the drop, in
    percentage points, negative = worse) and ``mcnemar_p`` (exact McNemar test on lost vs gained)."""
    from .stats import drop_ci_from_counts, mcnemar_exact

    keys = list(label_of)
    right = np.array([pred.get(k) == label_of[k] for k in keys], dtype=bool)
    ref_right = np.array([reference.get(k) == label_of[k] for k in keys], dtype=bool)
    lost, gained = int((ref_right & ~right).sum()), int((right & ~ref_right).sum())
    low, high = drop_ci_from_counts(len(keys), lost, gained) if keys else (None, None)
    return {
        "drop_ci_pp": None if low is None else [low, high],
        "mcnemar_p": mcnemar_exact(lost, gained),
        "lost": lost,
        "gained": gained,
    }
