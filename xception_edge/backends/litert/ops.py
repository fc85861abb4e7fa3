"""A TFLite model's facts, shared by the converter and ``inspect.py``: a LiteRT interpreter
without delegates, its ops with the Keras layers they compute (``op_layers``), what each op
computes in (``op_summary``), and its input/output specs.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np

from .frameworks import litert_interpreter
from ...model_io import _all_layers
from ...runtime.base import TensorSpec

_INTEGER_TYPES = {"int8", "uint8", "int16", "int32", "int64", "bool"}
_QDQ = ("QUANTIZE", "DEQUANTIZE")


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
    Interpreter = litert_interpreter()
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
