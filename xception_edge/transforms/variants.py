"""The source model each target converts: the model as given, or the model after its profile's
``[quantization] transforms`` (one variant per distinct list, shared by the targets that ask for
it). Each variant is checked to keep the float outputs (``transforms.apply``), and its record
goes into every manifest made from it (``transforms``)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from .. import console
from ..errors import BadInput
from ..profiles import TargetProfile

SCALES_FILE = "transforms.npz"
QUANTIZED = ("int8", "dynamic-int8")  # the precisions a `--transform` given for the run applies to


def check_names(names, where: str) -> tuple[str, ...]:
    """Known transform names, each once; a one-line BadInput naming ``where`` otherwise."""
    from . import TRANSFORMS

    from . import LAST

    names = tuple(names)
    for name in names:
        if name not in TRANSFORMS:
            raise BadInput(f"{where}: unknown transform {name!r}; known transforms: {', '.join(TRANSFORMS)} (or none)")
    if len(set(names)) != len(names):
        raise BadInput(f"{where}: a transform is listed twice ({', '.join(names)})")
    for name in LAST:
        if name in names[:-1]:
            raise BadInput(f"{where}: {name} puts the weights on the target's grid and must come last ({', '.join(names)})")
    return names


def with_transforms(profiles: list[TargetProfile], names: tuple[str, ...] | None) -> list[TargetProfile]:
    """Every profile's transforms checked; with ``names`` (convert's ``--transform``), those replace
    the profile's own on the quantized targets (int8, dynamic-int8); ``()`` turns them off."""
    out = []
    for p in profiles:
        check_names(p.quantization.transforms, f"{p.source}: [quantization] transforms")
        if names is not None and p.precision.value in QUANTIZED:
            p = dataclasses.replace(p, quantization=p.quantization.with_transforms(names))
        out.append(p)
    return out


def check_source(profiles: list[TargetProfile], src, model: str, *, asked: bool) -> list[TargetProfile]:
    """Transforms rewrite Keras layers, which a SavedModel input does not have: ``--transform``
    (``asked``) is then an error; a profile's own transforms are dropped with a warning."""
    wanting = [p.name for p in profiles if p.quantization.transforms]
    if not wanting or src.keras_model is not None:
        return profiles
    if asked:
        raise BadInput(
            f"--transform rewrites the Keras model's layers, and {model} is a SavedModel; "
            "pass the .keras/.h5 model, or --transform none"
        )
    console.warn(
        f"{model} is a SavedModel, without the Keras layers that transforms rewrite: {', '.join(wanting)} "
        "convert without their profiles' transforms (pass the .keras/.h5 model to have them)"
    )
    return [dataclasses.replace(p, quantization=p.quantization.with_transforms(())) for p in profiles]


def grid_params(profile: TargetProfile) -> dict:
    """The options of the profile's transforms: its own (``transform_options``) and, for those on the
    weight grid, the grid's: symmetric per channel, -127..127, or -64..64 for ONNX Runtime's
    reduce_range (its quantizer's 7-bit range)."""
    from . import ON_GRID, adaround

    # the grid as measured per backend against the artifacts' own weights (grid_check): NNCF's
    # overflow fix puts Convolution and MatMul weights on / 63.5 and leaves depthwise at / 127
    grid = adaround.grid_options(profile)
    q = profile.quantization
    params = {name: dict(q.transform_options.get(name, {})) for name in q.transforms}
    for name in q.transforms:
        if name in ON_GRID:
            params[name] |= grid
    return {name: opts for name, opts in params.items() if opts or name in ON_GRID}


def variant_key(profile: TargetProfile) -> tuple:
    """Which source variant ``profile`` converts: its transforms and their grid options."""
    names = profile.quantization.transforms
    return (names, json.dumps(grid_params(profile), sort_keys=True)) if names else ()


def prepare(src, profiles: list[TargetProfile], calib, images: np.ndarray | None, reference: np.ndarray | None = None) -> dict:
    """{variant_key: (source model, the manifests' ``transforms`` table or None, the per-layer
    values)}. Checked on ``images`` (verification; ``reference``: the source's outputs on them,
    when the caller has them), else on calibration images."""
    from . import apply

    calibration = calib.images if calib is not None else None
    check_images = images if images is not None else (calibration[:64] if calibration is not None else None)
    if check_images is None:
        raise BadInput("transforms need images to check that the float outputs stay put: pass --calibration or --verify-data")
    variants: dict[tuple, tuple[object, dict | None, dict]] = {(): (src, None, {})}
    for p in profiles:
        key = variant_key(p)
        if key in variants:
            continue
        names, params = p.quantization.transforms, grid_params(p)
        t0 = time.perf_counter()
        scales: dict = {}
        with console.progress(f"Applying {' + '.join(names)} to {src.spec}", total=None):
            model, records = apply(
                src.keras_model, names, calibration, verify_images=check_images, params=params, scales=scales,
                reference=reference if images is not None else None,
            )  # fmt: skip
        seconds = round(time.perf_counter() - t0, 2)
        console.info(f"{' + '.join(names)}: float outputs move by max |Δp| {_max_dp(records):.2g}; {seconds} s")
        variant = dataclasses.replace(src, keras_model=model, _predict_fn=_predictor(model))
        table = {"applied": list(names), "params": params, "seconds": seconds, "images": len(check_images), "records": records}
        if scales:
            table["scales_file"] = SCALES_FILE
        variants[key] = (variant, table, scales)
    return variants


def write_scales(stage: Path, scales: dict) -> None:
    """The per-layer scales into the artifact (listed in its manifest's files, so checked by sha256)."""
    with open(stage / SCALES_FILE, "wb") as f:
        np.savez(f, **scales)


def rebuild_source(src, manifest, folder: Path):
    """``src`` (`inspect`'s --model) as the artifact in ``folder`` was converted from it: its
    recorded transform scales re-applied to the Keras model."""
    model = rebuild(src.keras_model, manifest, folder)
    return dataclasses.replace(src, keras_model=model, _predict_fn=_predictor(model))


def rebuild(model, manifest, folder: Path):
    """The Keras model ``manifest``'s artifact was converted from, given the model before its
    transforms: the recorded scales re-applied. ``model`` when none were applied."""
    table = manifest.transforms or {}
    applied = table.get("applied")
    if not applied:
        return model
    if not (isinstance(applied, list) and all(isinstance(a, str) for a in applied)):
        raise BadInput(f"{folder}/manifest.json: 'transforms.applied' must be a list of transform names; convert it again")
    name = table.get("scales_file")
    if name != SCALES_FILE or SCALES_FILE not in manifest.files:
        raise BadInput(f"{folder}: its manifest records transforms {table['applied']} but no {SCALES_FILE}; convert it again")
    from . import REBUILDERS

    with np.load(folder / SCALES_FILE, allow_pickle=False) as data:
        values = {k: data[k] for k in data.files}
    for applied in table["applied"]:  # in the order they were applied
        rebuild_one = REBUILDERS.get(applied)
        if rebuild_one is None:
            raise BadInput(f"{folder}: its manifest records transform {applied!r}, which this xception-edge does not know")
        mine = {k.split(":", 1)[1]: v for k, v in values.items() if k.split(":", 1)[0] == applied}
        model = rebuild_one(model, mine)
    return model


def _max_dp(records: list[dict]) -> float:
    return max((r.get("max_abs_dp") or 0.0 for r in records), default=0.0)


def _predictor(model):
    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))

    return predict
