"""Pre-quantization transforms of a Keras model: backend-independent rewrites of the weights that
keep the float function and make post-training int8 quantization lose less.

    new_model, records = apply(model, ["cle"], calibration_images, verify_images=val_images)

Each transform returns a NEW model (the input model is never changed) and one record (a JSON-able
dict: name, params, per-layer effect). Keras and TensorFlow are imported inside the calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import BadInput
from . import adaround, bias_correction, cle

TRANSFORMS: dict[str, Callable] = {
    "cle": cle.transform,
    "bias_correction": bias_correction.transform,
    "adaround": adaround.transform,
}
# What rebuilds a transformed model from the original and the recorded per-layer values (`inspect`).
REBUILDERS: dict[str, Callable] = {
    "cle": cle.apply_scales,
    "bias_correction": bias_correction.apply_shifts,
    "adaround": adaround.apply_kernels,
}
# Transforms that work on the target's weight grid: their options depend on the profile.
ON_GRID = ("bias_correction", "adaround")
# Option checkers (each raises a one-line BadInput naming the option).
CHECKERS: dict[str, Callable] = {"cle": cle._options, "bias_correction": bias_correction._options, "adaround": adaround._options}
# Options a profile cannot set: the target's backend fixes the weight grid (variants.grid_params).
GRID_KEYS = ("weight_bits", "weight_qmax", "depthwise_qmax", "layer_qmax")
# Where each may stand in a list: AdaRound puts the kernels on the grid, so it comes last (a later
# rescaling would move them off it).
LAST = ("adaround",)


def apply(
    model,
    names: Sequence[str],
    calibration: np.ndarray | None,
    *,
    verify_images: np.ndarray,
    params: dict | None = None,
    scales: dict | None = None,
    reference: np.ndarray | None = None,
) -> tuple[object, list[dict]]:
    """``model`` transformed by each of ``names`` in order: (a new keras.Model, one record per
    transform). ``params`` maps a transform's name to its options, e.g. ``{"cle": {"alphas": [0.5]}}``.
    ``scales``, when given, receives each transform's per-layer scales (``{"cle:KIND:LAYER": array}``):
    what an artifact keeps in transforms.npz so that `inspect` can rebuild the converted model.
    ``reference``: ``model``'s outputs on ``verify_images`` when the caller has them (each
    transform's outputs are the next one's reference: one forward pass per transform)."""
    names = [names] if isinstance(names, str) else list(names)
    known = ", ".join(TRANSFORMS)
    for name in names:
        if name not in TRANSFORMS:
            raise BadInput(f"unknown transform {name!r}; known transforms: {known}")
    params = dict(params or {})
    for name, options in params.items():
        if name not in names:
            raise BadInput(f"params for transform {name!r}, which is not applied; applied transforms: {', '.join(names)}")
        if not isinstance(options, dict):
            raise BadInput(f"params for transform {name!r} must be a dict of options, not {type(options).__name__}")
    if len(verify_images) == 0:
        raise BadInput("transforms need verification images to check that the float outputs stay put")
    current, records = model, []
    for name in names:
        current, record = TRANSFORMS[name](
            current, calibration, verify_images=verify_images, reference=reference, **params.get(name, {})
        )
        reference = record.pop("_outputs", None)
        for key, value in record.pop("_scales", {}).items():
            if scales is not None:
                scales[f"{name}:{key}"] = value
        records.append(record)
    if not names:
        current = cle.clone(model)
    return current, records


def check_options(name: str, options: dict, where: str) -> None:
    """A profile's options for transform ``name``: known names, valid values, none of the grid's
    (which the backend fixes); else a one-line BadInput starting with ``where``."""
    fixed = sorted(set(options) & set(GRID_KEYS))
    if fixed:
        raise BadInput(f"{where}: {', '.join(fixed)} is set by the target's backend (its weight grid); remove it")
    try:
        CHECKERS[name](dict(options))
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{where}: an option has a value of the wrong kind ({exc})") from None
