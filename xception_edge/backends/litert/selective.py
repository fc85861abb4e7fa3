"""Selective quantization: an int8 profile's ``[quantization] ignored_scope`` (Keras layer names,
or TFLite tensor names) keeps those layers in float. TensorFlow's QuantizationDebugger calibrates
once and re-quantizes with the layers' ops denylisted (``denylisted_nodes``: their output tensor
names); the converter's integer check then allows exactly those ops, and the QUANTIZE/DEQUANTIZE
around them, to be float. The names were checked against the Keras model before the run started
(``xception_edge.scope``); what only the converted model can tell is checked here.
"""

from __future__ import annotations

from ... import frameworks, scope
from ...errors import BadInput, ConversionFailed, first_line
from ...model_io import SourceModel
from ...profiles import DType, TargetProfile
from ...runtime.base import TensorSpec
from .ops import interpreter, layer_nodes, op_layers


def tf_dtype(tf, name: str):
    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[name]


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
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_options=options(fully_quantize=fully))
    except Exception as exc:
        raise ConversionFailed(f"{profile.name}: TFLite QuantizationDebugger failed: {first_line(exc)}") from None
    kept = resolve_ignored_scope(profile, debugger.calibrated_model, src)
    if kept:
        nodes = [n for names in kept.values() for n in names]
        try:
            debugger.options = options(denylisted_nodes=nodes, fully_quantize=fully)  # re-quantizes, no re-calibration
        except Exception as exc:
            raise ConversionFailed(
                f"{profile.name}: re-quantizing with {', '.join(kept)} in float failed: {first_line(exc)}"
            ) from None
    return debugger, kept


def quantize_selectively(debugger, profile: TargetProfile, kept: dict[str, list[str]]) -> bytes:
    try:
        return _with_io_types(debugger.get_nondebug_quantized_model(), profile)
    except Exception as exc:
        raise ConversionFailed(f"{profile.name}: quantizing with {', '.join(kept)} in float failed: {first_line(exc)}") from None


def _with_io_types(model: bytes, profile: TargetProfile) -> bytes:
    """The profile's input/output dtypes, as TFLiteConverter sets them (``modify_model_io_type``
    removes the boundary QUANTIZE/DEQUANTIZE); int8/int8 is done by the quantizer already."""
    if _fully_quantize(profile):
        return model
    tf = frameworks.tensorflow()
    from tensorflow.lite.python.util import modify_model_io_type

    return modify_model_io_type(model, tf_dtype(tf, profile.input_dtype.value), tf_dtype(tf, profile.output_dtype.value))


def check_io(profile: TargetProfile, inp: TensorSpec, out: TensorSpec, kept: dict[str, list[str]]) -> None:
    """modify_model_io_type leaves a float input/output silently when a float layer touches it:
    the artifact would not have the profile's dtypes (ConversionFailed: the layers kept in float may
    be the accuracy budget's choice, and other targets go on)."""
    for what, spec, want in (("input", inp, profile.input_dtype.value), ("output", out, profile.output_dtype.value)):
        if spec.dtype != want:
            raise ConversionFailed(
                f"{profile.name}: with {', '.join(kept)} kept in float the model's {what} stays {spec.dtype}, "
                f'not {want}: a float layer reads the {what} directly; set {what}_dtype = "int8" or "float32", or quantize that layer'
            )


def resolve_ignored_scope(profile: TargetProfile, model: bytes, src: SourceModel) -> dict[str, list[str]]:
    """ignored_scope entries -> {entry: output tensor names of its ops} in the calibrated ``model``.
    An entry is a Keras layer with ops of its own (weighted layers, Add, a standalone Activation,
    pooling) or a TFLite op's output tensor name; a layer fused into another op, or no layer at
    all, is a BadInput."""
    from . import SPEC

    entries = profile.quantization.ignored_scope
    ops = op_layers(interpreter(model), src.keras_model) if entries else []
    owned = layer_nodes(ops)
    tensors = {o.tensor for o in ops}
    out: dict[str, list[str]] = {}
    for entry in entries:
        if entry in owned:
            out[entry] = owned[entry]
        elif entry in tensors:
            out[entry] = [entry]
        elif scope.check_entry(profile, entry, src, SPEC):  # a Keras layer without an op of its own
            hosts = sorted({o.layer for o in ops if entry in o.refs and o.layer})
            into = f"it is fused into the op of {', '.join(hosts)}; name {hosts[0]}" if hosts else "name a layer with weights"
            kind = scope.keras_layers(src)[entry]
            raise BadInput(
                f"{scope.where(profile)} '{entry}' is a Keras {kind} layer without an op of its own in the TFLite model: "
                f"{into} instead"
            )
        else:
            raise scope.unknown_entry(profile, entry, src, pool=set(owned), native=SPEC.native_names)
    return out
