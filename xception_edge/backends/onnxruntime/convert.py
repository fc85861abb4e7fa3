"""ONNX converter: Keras model -> ONNX (once per run: the toolkit's ONNX writer, tf2onnx for a
model it does not cover; exports.py) -> fp32, or int8 QDQ with
ONNX Runtime's static quantization calibrated on the shared calibration iterator.

The input stays NHWC float32 (one Transpose inside the graph); int8 QDQ keeps
float input and output, with QuantizeLinear/DequantizeLinear around every quantized op, which
ONNX Runtime fuses into QLinearConv/QLinearMatMul when it loads the model.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from ... import console, frameworks
from .calibrate import METHODS, calibration_cache
from .frameworks import onnxruntime, ort_quantization
from ...calibration import CalibrationSet
from ...errors import BadInput, ConversionFailed, first_line
from ...hostinfo import cpu_flags
from ...model_io import SourceModel, _all_layers
from ...runtime.base import TensorSpec
from ...profiles import Precision, QuantSpec, TargetProfile
from ...converters.base import ConvertedModel
from ...exports import Exports

MODEL_FILE = "model.onnx"
OPSET = 17
_QTYPES = {"int8": "QInt8", "uint8": "QUInt8"}
_ELEM = {1: "float32", 2: "uint8", 3: "int8"}
_COMPUTE_OPS = ("Conv", "MatMul", "Gemm")


def convert(
    src: SourceModel, profile: TargetProfile, calib: CalibrationSet | None, stage: Path, exports: Exports
) -> ConvertedModel:
    onnx = frameworks.onnx()
    ort = onnxruntime("convert")
    exported = exports.onnx(OPSET)
    out = stage / MODEL_FILE
    details: dict = {}
    if profile.precision is Precision.FP32:
        shutil.copyfile(exported, out)
    else:
        if calib is None or len(calib) == 0:
            raise ConversionFailed(f"{profile.name}: int8 needs calibration images; pass --calibration DIR")
        keras_layers = {layer.name for layer in _all_layers(src.keras_model)} if src.keras_model is not None else None
        details["quantization"] = quantize_qdq(
            exported, out, calib, profile.quantization, profile.per_channel, profile.name, keras_layers
        )
    try:
        onnx.checker.check_model(str(out))
    except Exception as exc:
        raise ConversionFailed(f"{profile.name}: the ONNX model fails onnx.checker: {first_line(exc)}") from None
    model = onnx.load(str(out))
    summary = qdq_summary(model)
    if profile.precision is Precision.INT8:
        _check_quantized(profile, summary, details["quantization"]["excluded_nodes"])
        risk = u8s8_overflow_pairs(model)
        details["quantization"]["u8s8_overflow_pairs"] = risk
        _check_saturation(profile, risk)
    inp, outp = io_specs(model)
    details.update(
        {
            "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "exporter": exports.onnx_exporter.get(OPSET) or _producer(onnx.load(str(exported), load_external_data=False)),
            "producer": _producer(model),
            "op_counts": summary["counts"],
            "layout": "NHWC input (the Transpose to NCHW is inside the graph)",
        }
    )
    tools = {"onnx": onnx.__version__, "onnxruntime": ort.__version__}
    if exports.onnx_exporter.get(OPSET, "tf2onnx").startswith("tf2onnx"):
        tools["tf2onnx"] = frameworks.tf2onnx().__version__
    return ConvertedModel(MODEL_FILE, inp, outp, tools, details)


def _producer(model) -> str:
    return f"{model.producer_name} {model.producer_version}".strip()


def preprocessed(fp32: Path) -> Path:
    """quant_pre_process (ORT optimization + symbolic shape inference), once per run (beside the
    run's export ``fp32``): the fp32 model quantize_static starts from (and `inspect` compares
    against, tensor names being equal)."""
    pre = fp32.with_name("model.preprocessed.onnx")
    if not pre.exists():
        shape_inference = ort_quantization().shape_inference
        tmp = pre.with_suffix(".tmp.onnx")
        try:
            shape_inference.quant_pre_process(str(fp32), str(tmp))
        except Exception as exc:
            raise ConversionFailed(f"ONNX Runtime quant_pre_process failed: {first_line(exc)}") from None
        tmp.replace(pre)
    return pre


def quantize_qdq(
    fp32: Path,
    out: Path,
    calib: CalibrationSet,
    q: QuantSpec,
    per_channel: bool,
    label: str,
    keras_layers: set[str] | None = None,
) -> dict:
    """Static QDQ int8 of ``fp32`` into ``out``. Calibration ranges depend only on the model,
    the images and the method, so targets of one run that share them calibrate once (a cache
    beside the run's export ``fp32``, made by ``calibrate.calibration_cache``)."""
    oq = ort_quantization()
    onnx = frameworks.onnx()
    pre = preprocessed(fp32)
    model = onnx.load(str(pre))
    excluded = _excluded_nodes(model, q.ignored_scope, label, keras_layers)
    cache, cached = calibration_cache(pre, calib, q.calibration_method, label, q.calibration_percentile)
    try:
        oq.quantize_static(
            str(pre),
            str(out),
            None,  # the ranges are in the cache
            quant_format=oq.QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=q.reduce_range,
            activation_type=getattr(oq.QuantType, _QTYPES[q.activation_dtype]),
            weight_type=getattr(oq.QuantType, _QTYPES[q.weight_dtype]),
            calibrate_method=getattr(oq.CalibrationMethod, METHODS[q.calibration_method]),
            nodes_to_exclude=excluded,
            calibration_cache_path=str(cache),
        )
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ConversionFailed(f"{label}: ONNX Runtime quantize_static failed: {first_line(exc)}") from None
    return {
        "format": "QDQ",
        "activation_dtype": q.activation_dtype,
        "weight_dtype": q.weight_dtype,
        "per_channel": per_channel,
        "reduce_range": q.reduce_range,
        "calibration_method": q.calibration_method,
        **({"calibration_percentile": q.calibration_percentile} if q.calibration_method == "percentile" else {}),
        "calibration_images": len(calib),
        "calibration_reused": cached,
        "excluded_nodes": excluded,
    }


def _excluded_nodes(model, layers: tuple[str, ...], label: str, keras_layers: set[str] | None = None) -> list[str]:
    """ONNX nodes of the Keras layers in ignored_scope. The ONNX writer starts every node's name
    with its layer's (``block4_sepconv1/pointwise``); tf2onnx keeps the layer name in the node
    name or in its weight's name (`.../block4_sepconv1_1/separable_conv2d/...`), suffixed when the
    scope was taken: each name segment is read back to one Keras layer (segment_layers)."""
    names = [n.name for n in model.graph.node] + [i for n in model.graph.node for i in n.input[1:]]
    seg_layer = segment_layers(names, set(keras_layers or ()) | set(layers))
    out = []
    for layer in layers:
        hits = [
            n.name
            for n in model.graph.node
            if any(seg_layer.get(s) == layer for name in [n.name, *n.input[1:]] for s in name.split("/"))
        ]
        if not hits:
            raise BadInput(
                f"{label}: [quantization] ignored_scope entry '{layer}' has no node of its own in the ONNX model "
                "(fused into another op, or computing nothing); name a layer with weights instead"
            )
        out += [h for h in hits if h not in out]
    return out


def segment_layers(names: list[str], layers: set[str]) -> dict[str, str]:
    """Name segments ('block4_sepconv1_1' in '.../block4_sepconv1_1/separable_conv2d/...') ->
    Keras layer. tf2onnx keeps TF's name scopes, which add '_<n>' to a layer's name when the
    scope was taken: keras.applications' 'conv2d_1' is the scope of layer 'conv2d' while layer
    'conv2d_1' became 'conv2d_1_2'. A segment that can only be one layer settles that layer;
    a segment left with two readings is read as suffixed, as Keras's export suffixes them all."""
    options: dict[str, set[str]] = {}
    for name in names:
        for seg in name.split("/"):
            if seg not in options:
                m = re.fullmatch(r"(.+)_\d+", seg)
                found = ({seg} | ({m.group(1)} if m else set())) & layers
                if found:
                    options[seg] = found
    settled = {next(iter(o)) for o in options.values() if len(o) == 1}
    out = {}
    for seg, found in options.items():
        left = found - settled if len(found) > 1 else found
        out[seg] = next(iter(left)) if len(left) == 1 else re.fullmatch(r"(.+)_\d+", seg).group(1)
    return out


def qdq_summary(model) -> dict:
    """Op counts, and the Conv/MatMul/Gemm nodes whose input or weight is not dequantized."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    float_compute = [
        n.name
        for n in model.graph.node
        if n.op_type in _COMPUTE_OPS and any(producer.get(i) != "DequantizeLinear" for i in n.input[:2])
    ]
    counts = Counter(n.op_type for n in model.graph.node)
    return {"counts": dict(sorted(counts.items())), "float_compute": float_compute}


def _check_quantized(profile: TargetProfile, summary: dict, excluded: list[str]) -> None:
    counts = summary["counts"]
    if not counts.get("QuantizeLinear") or not counts.get("DequantizeLinear"):
        raise ConversionFailed(f"{profile.name}: the int8 model has no QuantizeLinear/DequantizeLinear nodes")
    left = [n for n in summary["float_compute"] if n not in excluded]
    if left:
        shown = ", ".join(left[:6]) + (f" and {len(left) - 6} more" if len(left) > 6 else "")
        raise ConversionFailed(f"{profile.name}: {len(left)} Conv/MatMul node(s) stayed float: {shown}")


def u8s8_overflow_pairs(model) -> dict:
    """How many int8 weight pairs could overflow the 16-bit sums of ONNX Runtime's x86 AVX2 int8
    kernels (no VNNI). Those kernels (pmaddubsw) add two adjacent-K products u8 x s8 into int16,
    which saturates when 255 * (w0 + w1) passes 32767 for same-sign weights, i.e. |w0 + w1| >= 129:
    possible with full-range 8-bit weights, impossible with 7-bit ones (reduce_range). K runs
    over (kh, kw, cin) for Conv, the weight's K axis for MatMul/Gemm; depthwise Conv has its own int32 kernel."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    dq_src = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    risky = total = 0
    for n in model.graph.node:
        if n.op_type not in _COMPUTE_OPS or len(n.input) < 2 or dq_src.get(n.input[1]) not in inits:
            continue
        attrs = {a.name: a.i for a in n.attribute}
        if n.op_type == "Conv" and attrs.get("group", 1) > 1:
            continue
        w = numpy_helper.to_array(inits[dq_src[n.input[1]]])
        if w.dtype != np.int8:
            continue
        if n.op_type == "Conv":
            k_major = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)  # (cout, kh*kw*cin)
        else:  # MatMul / Gemm weight is (K, N), or (N, K) for Gemm with transB
            k_major = w if attrs.get("transB", 0) else w.T
        if k_major.shape[1] % 2:
            k_major = np.pad(k_major, ((0, 0), (0, 1)))
        pairs = k_major.astype(np.int32).reshape(k_major.shape[0], -1, 2)
        pos = np.clip(pairs, 0, None).sum(-1)
        neg = np.clip(pairs, None, 0).sum(-1)
        risky += int(((pos >= 129) | (neg <= -129)).sum())
        total += int(pos.size)
    return {"pairs": risky, "of": total, "fraction": round(risky / total, 6) if total else 0.0}


def _check_saturation(profile: TargetProfile, risk: dict) -> None:
    """Saturation hides from verification on a host with VNNI (32-bit dot products), so a profile
    for CPUs without VNNI refuses weights that can saturate; other x86/any-CPU profiles warn."""
    if not risk["pairs"]:
        return
    what = (
        f"{risk['pairs']} of {risk['of']} int8 weight pairs ({risk['fraction']:.1%}) can saturate the 16-bit sums "
        "of ONNX Runtime's int8 kernels on x86 CPUs without VNNI (AVX2 only)"
    )
    fix = "set [quantization] reduce_range = true (7-bit weights cannot saturate)"
    if profile.quantization.x86_without_vnni:
        raise ConversionFailed(f"{profile.name}: {what}, which this profile targets; {fix}")
    if profile.hardware.lower().startswith(("arm", "aarch")):
        return
    vnni = {"avx512_vnni", "avx_vnni"} & set(cpu_flags())
    host = "this host has VNNI, so verification here cannot see it" if vnni else "verification ran those kernels on this host"
    console.warn(f"{profile.name}: {what}; {host}. For such CPUs {fix}")


def io_specs(model) -> tuple[TensorSpec, TensorSpec]:
    """Input/output specs from the graph; a dynamic dimension is recorded as -1."""

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(v.name, _ELEM.get(t.elem_type, str(t.elem_type)), dims)

    return spec(model.graph.input[0]), spec(model.graph.output[0])
