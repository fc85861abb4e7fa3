"""Everything `inspect` (and `convert --max-drop`) needs before a backend measures: the artifact's
manifest and profile, the source model, the same calibration sample, the Keras layer table."""

from __future__ import annotations

from pathlib import Path

from ..artifact import read_manifest
from ..calibration import build_calibration, open_source
from ..errors import BadInput
from ..exports import Exports
from ..model_io import load_source
from ..targets import profile_from_dict
from .base import InspectContext
from .layers import layer_parts


def open_context(
    artifact: Path,
    model: str,
    calibration: Path,
    workdir: Path,
    *,
    num_images: int = 32,
    calibration_root: Path | None = None,
    unsafe_model: bool = False,
    source=None,
    exports=None,
    decoded: dict | None = None,
) -> InspectContext:
    """Read the artifact, load ``model`` (or reuse ``source``), and decode the calibration sample
    the artifact was made with (same source, seed and count: a re-quantization reproduces it).
    ``exports`` (an ``exports.Exports`` of ``source``) is reused, else made in ``workdir``.
    ``decoded`` keeps decoded samples across the artifacts of one run, so each is decoded once."""
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    if manifest.precision != "int8":
        raise BadInput(f"{artifact} is a {manifest.precision} artifact; inspect compares int8 artifacts with their fp32 source")
    profile = profile_from_dict(manifest.profile, artifact / "manifest.json")
    src = source or load_source(model, unsafe=unsafe_model)
    made_from = manifest.source_sha256
    if made_from and src.sha256 != made_from:
        raise BadInput(
            f"--model {model} (sha256 {src.sha256[:12]}…) is not the model {artifact} was converted from "
            f"({manifest.fact('source_model', 'spec')}, sha256 {made_from[:12]}…); pass that model"
        )
    if src.keras_model is None:
        raise BadInput(f"--model {model} is a SavedModel without Keras layers; inspect needs the .keras/.h5 file to name layers")
    spec = manifest.preprocessing
    if (src.height, src.width) != (spec.height, spec.width):
        raise BadInput(
            f"--model {model} takes {src.height}x{src.width} images but {artifact} was converted at "
            f"{spec.height}x{spec.width}; pass the model the artifact was converted from"
        )
    if (manifest.transforms or {}).get("applied"):  # compare with the model it was converted from: transformed
        from ..transforms.variants import rebuild_source

        src = rebuild_source(src, manifest, artifact)
    key = (spec, manifest.fact("calibration", "count") or 300, manifest.fact("calibration", "seed") or 0)
    decoded = {} if decoded is None else decoded
    if key not in decoded:
        decoded[key] = build_calibration(open_source(calibration, calibration_root), *key)
    calib = decoded[key]
    made_with = manifest.fact("calibration", "list_sha256")
    if made_with and calib.summary()["list_sha256"] != made_with:
        from .. import console

        console.warn(
            f"{calibration} does not give the calibration sample {artifact.name} was made with "
            "(different images); a backend that re-quantizes to inspect measures a slightly different model"
        )
    n = max(1, min(num_images, len(calib)))
    if exports is None or exports.source is not src:
        exports = Exports(src, Path(workdir))
    return InspectContext(artifact, manifest, profile, src, calib, calib.images[:n], exports, layer_parts(src.keras_model))
