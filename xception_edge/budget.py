"""Accuracy-aware conversion (`convert --max-drop PP --validation DIR`): one rule for every backend.

After each conversion, top-1 on the labelled validation images is compared with the Keras
model's (every precision is measured; only int8 can be repaired). While an int8 artifact's drop
exceeds the budget, the most harmful Keras layers (measured by `inspect`'s backend module on the
artifact just built, ranked by `inspection.base.blame`) are kept in float, in growing sets
(1, 2, 4, ... layers), and the target is converted again: the backend keeps them float its own
way (LiteRT denylist, OpenVINO/NNCF ignored scope, ONNX Runtime nodes_to_exclude). OpenVINO
first tries NNCF's own accuracy control (``quantize_with_accuracy_control``: it ranks quantizers
by the metric and its model is kept when our f32 measurement agrees). The float
layers may hold at most the profile's ``max_float_mac_share`` of the model's MACs; when the
budget cannot be met within it, conversion fails, saying the best drop reached."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from . import backends, console
from .accuracy import topk_hits
from .calibration import sha256_file
from .errors import BadInput, ConversionFailed
from .inspection.base import InspectContext
from .inspection.layers import float_mac_share, layer_parts
from .preprocess import PreprocessSpec, load_images
from .profiles import Precision, TargetProfile
from .records import BudgetAttempt, BudgetRecord, Manifest, Verification
from .records.budget import METHOD

MEASURE_IMAGES = 32  # calibration images the per-layer ranking is measured on


@dataclasses.dataclass
class Validation:
    """The labelled validation images, decoded once per run, and the Keras model's top-1 on them."""

    origin: str
    files: list[Path]
    labels: np.ndarray
    images: np.ndarray
    fp32_top1: float
    sha256: list[str]

    def top1(self, probs: np.ndarray) -> float:
        return float(np.mean(topk_hits(probs, self.labels, 1)))  # as evaluate scores it


def load_validation(path: Path, labels: list[str], spec: PreprocessSpec, src) -> Validation:
    from .dataset import labelled_images

    data = labelled_images(path, labels, require_labels=True)
    if not data.files:
        raise BadInput(f"--validation {path} holds no images; pass labelled images (class sub-folders named as the labels)")
    images, failed = load_images(list(data.files), spec)
    if failed:
        raise BadInput(f"--validation {path}: {len(failed)} image(s) cannot be decoded, e.g. {failed[0]}; remove them")
    targets = np.array(data.targets, dtype=np.int64)
    fp32 = float(np.mean(topk_hits(src.predict(images), targets, 1)))
    console.info(f"--validation: {len(images)} labelled images of {data.origin}; Keras fp32 top-1 {fp32:.2%}")
    return Validation(data.origin, list(data.files), targets, images, fp32, [sha256_file(f) for f in data.files])


def check_overlap(validation: Validation, calib, *, strict: bool) -> None:
    """Validation images that are also calibration images (same content, by sha256) flatter int8."""
    if calib is None:
        return
    calib_hashes = set(calib.sha256)
    shared = [f for f, h in zip(validation.files, validation.sha256) if h in calib_hashes]
    if not shared:
        return
    msg = (
        f"{len(shared)} of {len(validation.files)} --validation images are also calibration images (same sha256), "
        f"e.g. {shared[0]}; the measured drop will look better than on unseen images: use held-out images"
    )
    if strict:
        raise BadInput(msg + " (--strict makes this an error)")
    console.warn(msg)


def check_resolution(validation: Validation, max_drop: float) -> None:
    """A budget of fewer than 3 validation images measures noise: re-conversions move top-1 by an image or two."""
    step = 100.0 / len(validation.files)
    if max_drop < 3 * step:
        console.warn(
            f"--max-drop {max_drop:g} pp is under 3 images' worth of the {len(validation.files)} --validation images "
            f"(one image = {step:.2f} pp): drops that small are noise; use more validation images or a larger budget"
        )


def drop_pp(validation: Validation, runtime) -> float:
    return 100.0 * (validation.fp32_top1 - validation.top1(runtime.predict(validation.images)))


def _sizes(n: int) -> list[int]:
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n] if n else []


def keep_within_budget(
    profile: TargetProfile, max_drop: float, validation: Validation, src, calib, build, stage: Path, exports
) -> tuple[Manifest, Verification | None, BudgetRecord]:
    """``build(profile, **converter_options) -> (manifest, runtime, verification)`` converts into
    ``stage``; returns the (manifest, verification, budget record) of the first conversion within
    budget, or raises ConversionFailed with the best drop reached. ``exports``: the run's
    ``exports.Exports``, which the ranking's re-quantization shares."""
    base_scope = tuple(profile.quantization.ignored_scope)
    parts = layer_parts(src.keras_model)
    limit = profile.quantization.max_float_mac_share
    manifest, runtime, result = build(profile)
    drop = drop_pp(validation, runtime)
    first = BudgetAttempt(base_scope, round(float_mac_share(parts, base_scope), 6), round(drop, 3))
    attempts = [first]
    console.info(
        f"[{profile.name}] accuracy budget: top-1 drop {drop:.2f} pp on {len(validation.files)} validation images "
        f"(budget {max_drop:g} pp)"
    )
    record = BudgetRecord(
        METHOD, max_drop, validation.origin, len(validation.files), round(validation.fp32_top1, 6), limit,
        first.drop_pp, first.float_layers, first.float_mac_share, (first,),
    )  # fmt: skip
    if drop <= max_drop:
        return manifest, result, record
    if profile.precision is not Precision.INT8:
        raise ConversionFailed(
            f"{profile.name}: top-1 drop {drop:.2f} pp on {validation.origin} is over the budget of {max_drop:g} pp, and a "
            f"{profile.precision.value} artifact has no int8 layers to keep in float; raise --max-drop or choose another "
            "precision; the artifact was not written"
        )
    ctx = InspectContext(stage, manifest, profile, src, calib, calib.images[:MEASURE_IMAGES], exports, parts)
    ranked = _ranked(ctx, base_scope)
    best = (drop, list(base_scope))
    own = backends.get(profile.backend).accuracy()
    if own is not None:  # the backend's own accuracy-aware quantization first
        built = own.try_accuracy_control(profile, max_drop, validation, parts, build, stage, attempts, record)
        if built is not None:
            return built
        own_try = attempts[-1]
        if own_try.drop_pp < best[0] and own_try.float_mac_share <= limit:
            best = (own_try.drop_pp, list(own_try.float_layers))
    return _keep_more_in_float(profile, max_drop, validation, parts, ranked, build, stage, attempts, record, best)


def _ranked(ctx, base_scope: tuple[str, ...]) -> list[str]:
    """Keras layers, most harmful first, measured by ``inspect``'s backend module on the artifact just built."""
    from .inspection import backend_module
    from .inspection.base import blame, finish

    ranked = blame(finish(backend_module(ctx.profile.backend).measure(ctx), ctx.parts), base_scope)
    console.info(f"[{ctx.profile.name}] over budget; most harmful layers (inspect's ranking): {', '.join(ranked[:5])}")
    return ranked


def _keep_more_in_float(profile, max_drop, validation, parts, ranked, build, stage, attempts, record, best):
    """Re-convert with the 1, 2, 4, ... most harmful layers in float (within the MAC limit) until
    the drop is within budget; ConversionFailed with the best drop reached otherwise."""
    base_scope = tuple(profile.quantization.ignored_scope)
    limit = profile.quantization.max_float_mac_share
    fitting = [k for k in _sizes(len(ranked)) if float_mac_share(parts, base_scope + tuple(ranked[:k])) <= limit]
    for k in fitting:
        scope = base_scope + tuple(ranked[:k])
        share = float_mac_share(parts, scope)
        trial = dataclasses.replace(profile, quantization=dataclasses.replace(profile.quantization, ignored_scope=scope))
        clear_stage(stage)
        manifest, runtime, result = build(trial)
        drop = drop_pp(validation, runtime)
        attempts.append(BudgetAttempt(scope, round(share, 6), round(drop, 3)))
        console.info(f"[{profile.name}] {k} layer(s) in float ({share:.1%} of MACs): top-1 drop {drop:.2f} pp")
        if drop < best[0]:
            best = (drop, list(scope))
        if drop <= max_drop:
            return manifest, result, record.kept(attempts[-1], attempts)
    tried = f"{len(attempts) - 1} re-conversion(s)" if len(attempts) > 1 else "no re-conversion (no layer fits the MAC limit)"
    raise ConversionFailed(
        f"{profile.name}: top-1 drop stays above the budget of {max_drop:g} pp on {validation.origin}: best {best[0]:.2f} pp "
        f"with {len(best[1])} layer(s) in float ({float_mac_share(parts, best[1]):.1%} of MACs) after {tried}, within "
        f"max_float_mac_share {limit:g}; raise --max-drop or max_float_mac_share in the profile, or improve calibration; "
        "the artifact was not written"
    )


def clear_stage(stage: Path) -> None:
    """Remove the previous attempt's files from the staging folder."""
    for child in stage.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
