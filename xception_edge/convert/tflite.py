"""TFLite (LiteRT) converter: Keras 3 model -> SavedModel -> TFLiteConverter.

Precisions: fp32; fp16 weights; dynamic-range int8; full-integer int8 calibrated with the
shared calibration iterator (representative dataset), with every op checked to be integer.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from .. import console, frameworks
from ..calibration import CalibrationSet
from ..errors import ConversionFailed
from ..model_io import SourceModel
from ..runtime.base import TensorSpec
from ..types import Precision, TargetProfile
from .base import ConvertedModel

MODEL_FILE = "model.tflite"
_INTEGER_TYPES = {"int8", "uint8", "int16", "int32", "int64", "bool"}


def _tf_dtype(tf, name: str):
    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[name]


def convert(src: SourceModel, profile: TargetProfile, calib: CalibrationSet | None, stage: Path, workdir: Path) -> ConvertedModel:
    tf = frameworks.tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(src.export_saved_model(workdir)))
    precision = profile.precision
    if precision is not Precision.FP32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision is Precision.FP16:
        converter.target_spec.supported_types = [tf.float16]
    with contextlib.ExitStack() as stack:
        if precision is Precision.INT8:
            if calib is None or len(calib) == 0:
                raise ConversionFailed(f"{profile.name}: int8 needs calibration images; pass --calibration DIR")
            task = stack.enter_context(console.progress(f"{profile.name}: calibrating on {len(calib)} images", total=len(calib)))

            def representative():
                for batch in calib.batches():
                    task.advance()
                    yield [batch]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = _tf_dtype(tf, profile.input_dtype.value)
            converter.inference_output_type = _tf_dtype(tf, profile.output_dtype.value)
            if not profile.per_channel:
                converter._experimental_disable_per_channel = True
        try:
            tflite_bytes = converter.convert()
        except Exception as exc:
            raise ConversionFailed(f"{profile.name}: TFLiteConverter failed: {str(exc).splitlines()[0][:300]}") from None
    (stage / MODEL_FILE).write_bytes(tflite_bytes)

    ops = op_summary(stage / MODEL_FILE)
    if precision is Precision.INT8:
        float_ops = [f"{o['op']} ({o['tensor']})" for o in ops["ops"] if not o["integer"]]
        if float_ops:
            shown = ", ".join(float_ops[:6]) + (f" and {len(float_ops) - 6} more" if len(float_ops) > 6 else "")
            raise ConversionFailed(f"{profile.name}: the int8 model still has {len(float_ops)} float op(s): {shown}")
    inp, out = io_specs(stage / MODEL_FILE)
    details = {"op_counts": ops["counts"], "all_ops_integer": ops["all_integer"]}
    return ConvertedModel(MODEL_FILE, inp, out, {"tensorflow": tf.__version__}, details)


def _inspector(path: Path):
    """An interpreter without delegates, so the op list is the model's own."""
    Interpreter = frameworks.litert_interpreter()
    try:
        from ai_edge_litert.interpreter import OpResolverType

        interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except ImportError:
        interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    return interp


def op_summary(path: Path) -> dict:
    """Every op with whether it computes in integer; counts per op type.

    A QUANTIZE reading a float model input, or a DEQUANTIZE writing a float model output, is
    the boundary a profile with float input/output asks for, and counts as integer; any other
    op touching a float tensor does not.
    """
    interp = _inspector(path)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    model_inputs = {d["index"] for d in interp.get_input_details()}
    model_outputs = {d["index"] for d in interp.get_output_details()}
    ops, counts = [], {}
    for op in interp._get_ops_details():
        types = {np.dtype(t).name for t in list(op["operand_types"]) + list(op["result_types"])}
        boundary = (op["op_name"] == "QUANTIZE" and set(op["inputs"]) <= model_inputs) or (
            op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) <= model_outputs)
        integer = boundary or types <= _INTEGER_TYPES
        out_name = names.get(op["outputs"][0], "?") if len(op["outputs"]) else "?"
        ops.append({"op": op["op_name"], "tensor": out_name, "integer": integer})
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return {"ops": ops, "counts": dict(sorted(counts.items())), "all_integer": all(o["integer"] for o in ops)}


def io_specs(path: Path) -> tuple[TensorSpec, TensorSpec]:
    interp = _inspector(path)

    def spec(d) -> TensorSpec:
        scale, zp = d["quantization"]
        return TensorSpec(d["name"], np.dtype(d["dtype"]).name, tuple(int(s) for s in d["shape"]), float(scale), int(zp))

    return spec(interp.get_input_details()[0]), spec(interp.get_output_details()[0])
