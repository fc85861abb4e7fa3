"""TFLite (LiteRT) converter: Keras 3 model -> SavedModel -> TFLiteConverter.

Precisions: fp32; fp16 weights; dynamic-range int8; full-integer int8 calibrated with the
shared calibration iterator (representative dataset), with every op checked to be integer.

Selective quantization: an int8 profile's ``[quantization] ignored_scope`` (Keras layer names)
keeps those layers in float. TensorFlow's QuantizationDebugger calibrates once and re-quantizes
with the layers' ops denylisted (``denylisted_nodes``: their output tensor names); the integer
check then allows exactly those ops, and the QUANTIZE/DEQUANTIZE around them, to be float.
Keras layer -> TFLite op: ``op_layers`` (shared with ``inspect.py`` beside it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import warnings
from pathlib import Path

import numpy as np

from ... import console, frameworks
from ...calibration import CalibrationSet
from ...errors import BadInput, ConversionFailed
from ...model_io import SourceModel, _all_layers
from ...runtime.base import TensorSpec
from ...profiles import DType, Precision, TargetProfile
from ...converters.base import ConvertedModel

MODEL_FILE = "model.tflite"
_INTEGER_TYPES = {"int8", "uint8", "int16", "int32", "int64", "bool"}
_QDQ = ("QUANTIZE", "DEQUANTIZE")


def _tf_dtype(tf, name: str):
    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[name]


def convert(src: SourceModel, profile: TargetProfile, calib: CalibrationSet | None, stage: Path, workdir: Path) -> ConvertedModel:
    tf = frameworks.tensorflow()
    precision = profile.precision
    selective = precision is Precision.INT8 and bool(profile.quantization.ignored_scope)
    kept: dict[str, list[str]] = {}
    if selective:
        resolve_ignored_scope(profile, None, src)  # unknown names fail before calibrating
    src.export_saved_model(workdir)  # once, cached; before the calibration progress starts
    with contextlib.ExitStack() as stack:
        on_image = None
        if precision is Precision.INT8 and calib is not None and len(calib):
            on_image = stack.enter_context(
                console.progress(f"{profile.name}: calibrating on {len(calib)} images", total=len(calib))
            ).advance
        converter = build_converter(src, profile, calib, workdir, on_image=on_image)
        if selective:
            debugger, kept = quantization_debugger(converter, profile, src)
            tflite_bytes = _quantize_selectively(debugger, profile, kept)
        else:
            try:
                tflite_bytes = converter.convert()
            except Exception as exc:
                raise ConversionFailed(f"{profile.name}: TFLiteConverter failed: {_first_line(exc)}") from None
    (stage / MODEL_FILE).write_bytes(tflite_bytes)

    float_nodes = frozenset(n for nodes in kept.values() for n in nodes)
    ops = op_summary(stage / MODEL_FILE, float_nodes)
    if precision is Precision.INT8:
        _check_integer(profile, ops, float_nodes)
    inp, out = io_specs(stage / MODEL_FILE)
    details = {"op_counts": ops["counts"], "all_ops_integer": ops["all_integer"]}
    if selective:
        _check_io(profile, inp, out, kept)
        details["float_layers"] = list(kept)
        details["float_ops"] = sum(1 for o in ops["ops"] if o["kept_float"] and o["op"] not in _QDQ)
    return ConvertedModel(MODEL_FILE, inp, out, {"tensorflow": tf.__version__}, details)


def build_converter(src: SourceModel, profile: TargetProfile, calib: CalibrationSet | None, workdir: Path, *, on_image=None):
    """The TFLiteConverter for ``profile`` on the source's SavedModel; for int8 its representative
    dataset is the shared calibration iterator (``on_image()`` is called per image)."""
    tf = frameworks.tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(src.export_saved_model(workdir)))
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
        converter.inference_input_type = _tf_dtype(tf, profile.input_dtype.value)
        converter.inference_output_type = _tf_dtype(tf, profile.output_dtype.value)
        if not profile.per_channel:
            converter._experimental_disable_per_channel = True
    return converter


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]


# --------------------------------------------------------------------------- selective quantization
def _fully_quantize(profile: TargetProfile) -> bool:
    """int8 in and out: the quantizer itself makes the model's input and output int8 (this holds
    even when a float layer reads the input); other dtypes are set afterwards (``_with_io_types``)."""
    return profile.input_dtype is DType.INT8 and profile.output_dtype is DType.INT8


def quantization_debugger(converter, profile: TargetProfile, src: SourceModel):
    """A ``tf.lite.experimental.QuantizationDebugger`` over ``converter`` (it calibrates once),
    with the ops of the profile's ``ignored_scope`` layers denylisted. Returns the debugger and
    {layer: its ops' output tensor names} of the layers kept in float."""
    tf = frameworks.tensorflow()
    options = tf.lite.experimental.QuantizationDebugOptions
    fully = _fully_quantize(profile)
    resolve_ignored_scope(profile, None, src)  # unknown names fail before calibrating
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_options=options(fully_quantize=fully))
    except Exception as exc:
        raise ConversionFailed(f"{profile.name}: TFLite QuantizationDebugger failed: {_first_line(exc)}") from None
    kept = resolve_ignored_scope(profile, debugger.calibrated_model, src)
    if kept:
        nodes = [n for layer_nodes in kept.values() for n in layer_nodes]
        try:
            debugger.options = options(denylisted_nodes=nodes, fully_quantize=fully)  # re-quantizes, no re-calibration
        except Exception as exc:
            raise ConversionFailed(
                f"{profile.name}: re-quantizing with {', '.join(kept)} in float failed: {_first_line(exc)}"
            ) from None
    return debugger, kept


def _quantize_selectively(debugger, profile: TargetProfile, kept: dict[str, list[str]]) -> bytes:
    try:
        return _with_io_types(debugger.get_nondebug_quantized_model(), profile)
    except Exception as exc:
        raise ConversionFailed(f"{profile.name}: quantizing with {', '.join(kept)} in float failed: {_first_line(exc)}") from None


def _with_io_types(model: bytes, profile: TargetProfile) -> bytes:
    """The profile's input/output dtypes, as TFLiteConverter sets them (``modify_model_io_type``
    removes the boundary QUANTIZE/DEQUANTIZE); int8/int8 is done by the quantizer already."""
    if _fully_quantize(profile):
        return model
    tf = frameworks.tensorflow()
    from tensorflow.lite.python.util import modify_model_io_type

    return modify_model_io_type(model, _tf_dtype(tf, profile.input_dtype.value), _tf_dtype(tf, profile.output_dtype.value))


def _check_io(profile: TargetProfile, inp: TensorSpec, out: TensorSpec, kept: dict[str, list[str]]) -> None:
    """modify_model_io_type leaves a float input/output silently when a float layer touches it."""
    for what, spec, want in (("input", inp, profile.input_dtype.value), ("output", out, profile.output_dtype.value)):
        if spec.dtype != want:
            raise BadInput(
                f"{profile.source or profile.name}: with {', '.join(kept)} kept in float the model's {what} stays {spec.dtype}, "
                f'not {want}: a float layer reads the {what} directly; set {what}_dtype = "int8" or "float32", or quantize that layer'
            )


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


def resolve_ignored_scope(profile: TargetProfile, model: bytes | None, src: SourceModel) -> dict[str, list[str]]:
    """ignored_scope entries -> {entry: output tensor names of its ops}. An entry is a Keras layer
    with ops of its own (weighted layers, Add, a standalone Activation, pooling) or a TFLite op's
    output tensor name; a layer fused into another op, or no layer at all, is a BadInput.
    ``model`` None: only check the names against the Keras model (before calibrating)."""
    scope = profile.quantization.ignored_scope
    ops = op_layers(interpreter(model), src.keras_model) if model is not None and scope else []
    owned = layer_nodes(ops)
    tensors = {o.tensor for o in ops}
    keras_layers = {l.name: l.__class__.__name__ for l in _all_layers(src.keras_model)} if src.keras_model is not None else {}
    where = f"{profile.source or profile.name}: [quantization] ignored_scope entry"
    out: dict[str, list[str]] = {}
    for entry in scope:
        if entry in owned:
            out[entry] = owned[entry]
        elif entry in tensors:
            out[entry] = [entry]
        elif entry in keras_layers:
            if model is None:
                continue
            hosts = sorted({o.layer for o in ops if entry in o.refs and o.layer})
            into = f"it is fused into the op of {', '.join(hosts)}; name {hosts[0]}" if hosts else "name a layer with weights"
            raise BadInput(
                f"{where} '{entry}' is a Keras {keras_layers[entry]} layer without an op of its own in the TFLite model: "
                f"{into} instead"
            )
        elif model is None and "/" in entry:
            continue  # maybe a TFLite tensor name: checked once the model is converted
        else:
            pool = sorted(set(keras_layers) | set(owned))
            close = ([n for n in pool if entry in n] or difflib.get_close_matches(entry, pool, n=4, cutoff=0.5) or pool)[:4]
            hint = (
                ""
                if src.keras_model is not None
                else " (a SavedModel keeps no Keras layer names: name TFLite tensors, or convert the .keras file)"
            )
            names = f"; close layer names: {', '.join(close)}" if close else ""
            raise BadInput(f"{where} '{entry}' is not a layer of {src.spec}{hint}{names}")
    return out


# --------------------------------------------------------------------------- Keras layer <-> TFLite op
_WEIGHTED_KERAS = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense")
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
_OP_KERAS = {  # non-weighted op -> the Keras layer classes it computes
    "ADD": ("Add",),
    "MUL": ("Multiply",),
    "SUB": ("Subtract",),
    "CONCATENATION": ("Concatenate",),
    "MAX_POOL_2D": ("MaxPooling2D",),
    "AVERAGE_POOL_2D": ("AveragePooling2D",),
    "MEAN": ("GlobalAveragePooling2D",),
    "REDUCE_MAX": ("GlobalMaxPooling2D",),
    "RELU": ("Activation", "ReLU"),
    "RELU6": ("Activation", "ReLU"),
    "LOGISTIC": ("Activation",),
    "TANH": ("Activation",),
    "HARD_SWISH": ("Activation",),
    "SOFTMAX": ("Activation", "Softmax"),
}


@dataclasses.dataclass(frozen=True)
class OpLayer:
    """One TFLite op and the Keras layer it computes (None: no layer, e.g. QUANTIZE)."""

    index: int
    op: str  # CONV_2D
    tensor: str  # its output tensor's name
    layer: str | None  # the Keras layer: "block4_sepconv1"
    part: str | None  # the inspection LayerPart name: "block4_sepconv1/pointwise"
    refs: tuple[str, ...]  # every Keras layer named in the (fused) tensor name
    scope: str  # the ";"-part of the tensor name naming ``layer`` (the whole name without a layer)


def op_layers(interp, keras_model) -> list[OpLayer]:
    """Every op of a TFLite interpreter with the Keras layer it computes.

    TFLite names an op's output after the TF ops fused into it, ``;``-joined, each a scope path
    holding the Keras layer names, uniquified by a ``_N`` suffix when the export traced the model
    twice (``compact_xception_1/block4_sepconv1_1/separable_conv2d``; layer ``add_1`` becomes
    ``add_1_2``). A fused op names several layers (conv, BatchNorm, activation); it computes the
    weighted one, or for other ops the layer whose class fits the op (ADD -> Add).
    """
    tensors = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    layers = {l.name: l for l in _all_layers(keras_model) if not hasattr(l, "layers")} if keras_model is not None else {}
    model_outputs = {int(d["index"]) for d in interp.get_output_details()}
    out = []
    for op in interp._get_ops_details():
        if op["op_name"] == "DELEGATE" or not len(op["outputs"]):
            continue
        name = tensors.get(op["outputs"][0], "")
        found = _references(name, layers, keras_model.name if keras_model is not None else "")
        if not found and int(op["outputs"][0]) in model_outputs:  # renamed after the signature ("StatefulPartitionedCall_1:0")
            last = _output_layer(keras_model)
            found = {last: name} if last in layers else {}
        refs = tuple(found)
        layer = _computing_layer(op["op_name"], refs, layers)
        part = None
        if layer is not None:
            kind = layers[layer].__class__.__name__
            if kind == "SeparableConv2D":
                part = f"{layer}/depthwise" if op["op_name"] == "DEPTHWISE_CONV_2D" else f"{layer}/pointwise"
            elif kind in _WEIGHTED_KERAS or kind in (
                "Add",
                "MaxPooling2D",
                "AveragePooling2D",
                "GlobalAveragePooling2D",
                "GlobalMaxPooling2D",
            ):
                part = layer
        out.append(OpLayer(int(op["index"]), op["op_name"], name, layer, part, refs, found.get(layer, name)))
    return out


def layer_nodes(ops: list[OpLayer]) -> dict[str, list[str]]:
    """{Keras layer: output tensor names of the ops computing it}, in op order."""
    out: dict[str, list[str]] = {}
    for o in ops:
        if o.layer is not None and o.op not in _QDQ:
            out.setdefault(o.layer, []).append(o.tensor)
    return out


def _references(name: str, layers: dict, model_name: str) -> dict[str, str]:
    """{Keras layer: the ";"-part of ``name`` naming it}, in order of appearance."""
    if not layers:
        return {}
    segments = [s.split("/") for s in name.split(";")]
    # uniquified scopes (the model's own scope shows it): strip one "_N" first, else take names as they are
    suffixed = any(re.fullmatch(re.escape(model_name) + r"_\d+", s[0]) for s in segments if s)
    refs: dict[str, str] = {}
    for seg in segments:
        for comp in seg:
            stripped = re.sub(r"_\d+$", "", comp)
            order = (stripped, comp) if suffixed else (comp, stripped)
            hit = next((c for c in order if c in layers), None)
            if hit is not None:
                refs.setdefault(hit, "/".join(seg))
    return refs


def _output_layer(keras_model) -> str | None:
    try:
        return keras_model.outputs[0]._keras_history[0].name
    except (AttributeError, IndexError, TypeError):
        return None


def _computing_layer(op_name: str, refs: tuple[str, ...], layers: dict) -> str | None:
    if op_name in _QDQ or not refs:
        return None
    kinds = _WEIGHTED_KERAS if op_name in _WEIGHTED_OPS else _OP_KERAS.get(op_name)
    if kinds is not None:
        return next((r for r in refs if layers[r].__class__.__name__ in kinds), None)
    return next((r for r in refs if layers[r].__class__.__name__ != "BatchNormalization"), None)


# --------------------------------------------------------------------------- model facts
def interpreter(model: Path | bytes, *, preserve_all_tensors: bool = False):
    """A LiteRT interpreter without delegates (so the op list is the model's own, and with
    ``preserve_all_tensors`` every intermediate tensor stays readable after invoke)."""
    Interpreter = frameworks.litert_interpreter()
    src = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    kwargs = {"experimental_preserve_all_tensors": True} if preserve_all_tensors else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": it is
        try:
            from ai_edge_litert.interpreter import OpResolverType

            interp = Interpreter(**src, **kwargs, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        except ImportError:
            interp = Interpreter(**src, **kwargs)
    interp.allocate_tensors()
    return interp


def op_summary(path: Path, float_nodes: frozenset[str] = frozenset()) -> dict:
    """Every op with whether it computes in integer; counts per op type.

    A QUANTIZE reading a float model input, or a DEQUANTIZE writing a float model output, is
    the boundary a profile with float input/output asks for, and counts as integer; any other
    op touching a float tensor does not. ``kept_float``: a float op whose output is one of
    ``float_nodes`` (a layer kept in float), or a QUANTIZE/DEQUANTIZE between it and int8 ops.
    """
    interp = interpreter(path)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    model_inputs = {d["index"] for d in interp.get_input_details()}
    model_outputs = {d["index"] for d in interp.get_output_details()}
    details = interp._get_ops_details()
    kept = [op for op in details if len(op["outputs"]) and names.get(op["outputs"][0]) in float_nodes]
    kept_out = {t for op in kept for t in op["outputs"]}
    kept_in = {t for op in kept for t in op["inputs"]}
    ops, counts = [], {}
    for op in details:
        types = {np.dtype(t).name for t in list(op["operand_types"]) + list(op["result_types"])}
        boundary = (op["op_name"] == "QUANTIZE" and set(op["inputs"]) <= model_inputs) or (
            op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) <= model_outputs
        )
        integer = boundary or types <= _INTEGER_TYPES
        out_name = names.get(op["outputs"][0], "?") if len(op["outputs"]) else "?"
        around = (op["op_name"] == "QUANTIZE" and set(op["inputs"]) <= kept_out) or (
            op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) <= kept_in
        )
        kept_float = not integer and (out_name in float_nodes or around)
        ops.append({"op": op["op_name"], "tensor": out_name, "integer": integer, "kept_float": kept_float})
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return {"ops": ops, "counts": dict(sorted(counts.items())), "all_integer": all(o["integer"] for o in ops)}


def io_specs(path: Path) -> tuple[TensorSpec, TensorSpec]:
    interp = interpreter(path)

    def spec(d) -> TensorSpec:
        scale, zp = d["quantization"]
        return TensorSpec(d["name"], np.dtype(d["dtype"]).name, tuple(int(s) for s in d["shape"]), float(scale), int(zp))

    return spec(interp.get_input_details()[0]), spec(interp.get_output_details()[0])
