"""TFLite (LiteRT) converter: Keras 3 model -> SavedModel (the run's export) -> TFLiteConverter.

Precisions: fp32; fp16 weights; dynamic-range int8; full-integer int8 calibrated with the
shared calibration iterator (representative dataset), with every op checked to be integer.
An int8 profile's ``[quantization] ignored_scope`` keeps layers in float (``selective.py``);
Keras layer -> TFLite op, and what each op computes in: ``ops.py`` (shared with ``inspect.py``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ... import console, frameworks
from ...calibration import CalibrationSet
from ...converters.base import ConvertedModel
from ...errors import ConversionFailed, first_line
from ...exports import Exports
from ...model_io import SourceModel
from ...profiles import Precision, TargetProfile
from .calibrate import every_core
from .shared_ranges import onnxruntime_ranges
from .ops import _QDQ, io_specs, op_summary
from .ops import interpreter, op_layers  # noqa: F401  where callers have found them
from .selective import check_io, quantization_debugger, quantize_selectively, tf_dtype

MODEL_FILE = "model.tflite"


def convert(
    src: SourceModel, profile: TargetProfile, calib: CalibrationSet | None, stage: Path, exports: Exports
) -> ConvertedModel:
    tf = frameworks.tensorflow()
    precision = profile.precision
    selective = precision is Precision.INT8 and bool(profile.quantization.ignored_scope)
    saved_model = exports.saved_model()  # once per run; before the calibration progress starts
    calibration: dict = {}
    tflite_bytes, kept = _convert_bytes(saved_model, src, profile, calib, selective, exports, calibration)
    if precision is Precision.INT8 and calib is not None and len(calib) > 0:
        _check_method(profile, calibration)
    (stage / MODEL_FILE).write_bytes(tflite_bytes)

    float_nodes = frozenset(n for nodes in kept.values() for n in nodes)
    ops = op_summary(stage / MODEL_FILE, float_nodes)
    if precision is Precision.INT8:
        _check_integer(profile, ops, float_nodes)
    inp, out = io_specs(stage / MODEL_FILE)
    details = {"op_counts": ops["counts"], "all_ops_integer": ops["all_integer"]}
    if calibration:
        details["calibration"] = calibration
    if selective:
        check_io(profile, inp, out, kept)
        details["float_layers"] = list(kept)
        details["float_ops"] = sum(1 for o in ops["ops"] if o["kept_float"] and o["op"] not in _QDQ)
    return ConvertedModel(MODEL_FILE, inp, out, {"tensorflow": tf.__version__}, details)


def _convert_bytes(saved_model: Path, src: SourceModel, profile: TargetProfile, calib, selective: bool, exports, record):
    """The converted model, and {layer: its ops' output tensor names} of the layers kept in float.
    An int8 model takes its activation ranges from the calibration of the run's ONNX export
    (``shared_ranges.py``; ``record`` says whether it did), else TFLite calibrates with one
    process per core (``calibrate.py``); either way TFLiteConverter quantizes, with the layers of
    ignored_scope in float (``selective.py``: the debugger's calibration is the same call)."""
    int8 = profile.precision is Precision.INT8 and calib is not None and len(calib) > 0
    q = profile.quantization
    ranges = (
        onnxruntime_ranges(src, exports, calib, profile.name, record, q.calibration_method, q.calibration_percentile)
        if int8
        else None
    )
    with contextlib.ExitStack() as stack:
        on_image = None
        if int8:
            on_image = stack.enter_context(
                console.progress(f"{profile.name}: calibrating on {len(calib)} images", total=len(calib))
            ).advance
        converter = build_converter(saved_model, profile, calib, on_image=on_image)
        if on_image is not None:
            stack.enter_context(every_core(calib.images, on_image, ranges=ranges))
        if selective:
            debugger, kept = quantization_debugger(converter, profile, src)
            return quantize_selectively(debugger, profile, kept), kept
        try:
            return converter.convert(), {}
        except Exception as exc:
            raise ConversionFailed(f"{profile.name}: TFLiteConverter failed: {first_line(exc)}") from None


def _check_method(profile: TargetProfile, record: dict) -> None:
    """A calibration_method other than min-max needs ONNX Runtime's ranges (TFLite's calibrator
    records min and max only): when they could not be used, the record and a warning say so."""
    method = profile.quantization.calibration_method
    if record.get("method", "minmax") != method:
        record.update(method="minmax", method_asked=method, ranges=record.get("ranges", "tflite"))
        why = record.get("why") or "no ranges were shared"
        console.warn(
            f"{profile.name}: calibration_method = {method!r} takes ONNX Runtime's ranges, which this conversion "
            f"could not use ({why}); TFLite calibrated with min-max"
        )


def build_converter(saved_model: Path, profile: TargetProfile, calib: CalibrationSet | None, *, on_image=None):
    """The TFLiteConverter for ``profile`` on the run's SavedModel; for int8 its representative
    dataset is the shared calibration iterator (``on_image()`` is called per image)."""
    tf = frameworks.tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    precision = profile.precision
    if precision is not Precision.FP32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision is Precision.FP16:
        converter.target_spec.supported_types = [tf.float16]
    if precision is Precision.INT8:
        if calib is None or len(calib) == 0:
            raise ConversionFailed(f"{profile.name}: int8 needs calibration images; pass --calibration DIR")

        def representative():
            for batch in calib.batches():
                if on_image is not None:
                    on_image()
                yield [batch]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf_dtype(tf, profile.input_dtype.value)
        converter.inference_output_type = tf_dtype(tf, profile.output_dtype.value)
        if not profile.per_channel:
            converter._experimental_disable_per_channel = True
    return converter


def _check_integer(profile: TargetProfile, ops: dict, float_nodes: frozenset[str]) -> None:
    float_ops = [f"{o['op']} ({o['tensor']})" for o in ops["ops"] if not o["integer"] and not o["kept_float"]]
    if float_ops:
        shown = ", ".join(float_ops[:6]) + (f" and {len(float_ops) - 6} more" if len(float_ops) > 6 else "")
        raise ConversionFailed(f"{profile.name}: the int8 model still has {len(float_ops)} float op(s): {shown}")
    floated = {o["tensor"] for o in ops["ops"] if o["kept_float"]}
    missed = sorted(float_nodes - floated)
    if missed:
        raise ConversionFailed(
            f"{profile.name}: the quantizer did not keep {len(missed)} denylisted op(s) in float: {', '.join(missed[:4])}"
        )
