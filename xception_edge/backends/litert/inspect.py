"""LiteRT (TFLite) per-layer quantization error.

Accumulated error (``sqnr_db``, ``input_sqnr_db``): the artifact's own ``model.tflite`` (what
ships, int8 input quantized as the runtime does) against the float TFLite graph the quantizer
calibrated (``QuantizationDebugger.calibrated_model``: the same conversion, so the same fused
ops and tensor names, with float weights). Both run every image on LiteRT without delegates and
with ``experimental_preserve_all_tensors``; every op's output is compared, int8 dequantized with
its scale/zero point. An op's input is read where its producer writes it (through any
QUANTIZE/DEQUANTIZE), so an input requantization counts as the op's own loss; the model input is
compared as the artifact receives it (an int8 input shows its quantization error).

Own error (``own_sqnr_db``): TensorFlow's ``tf.lite.experimental.QuantizationDebugger``, built
from the converter exactly as ``convert`` builds it (same profile, same calibration sample, the
profile's ignored_scope denylisted), so its model has the artifact's scales. Its NumericVerify
pairs compare each int8 op with the same op in float fed the same dequantized inputs; the SQNR
comes from ``layer_direct_compare_metrics`` (Σfloat² and Σ(float − dequantized int8)² per image,
summed over the images). Layers kept in float have no own error.

TFLite tensor names -> Keras layers: ``backends/litert/ops.py: op_layers`` (also used for the denylist).
"""

from __future__ import annotations

import warnings

import numpy as np

from ... import console, frameworks
from .convert import build_converter
from .ops import interpreter, op_layers
from .selective import quantization_debugger
from ...errors import ConversionFailed
from ...runtime.base import TensorSpec, dequantize, quantize
from ...inspection.base import InspectContext, LayerError, SqnrAccumulator

TOOL = "TFLite QuantizationDebugger (own error) + intermediate tensors of the artifact"  # what `inspect` says it measured with

_QDQ = ("QUANTIZE", "DEQUANTIZE")
_VERIFY_OP = "NumericVerify"


def measure(ctx: InspectContext) -> list[LayerError]:
    keras_model = ctx.source.keras_model
    saved_model = ctx.exports.saved_model()  # once per run, before the progress starts
    with console.progress(
        f"{ctx.profile.name}: calibrating the QuantizationDebugger on {len(ctx.calib)} images", total=len(ctx.calib)
    ) as task:
        converter = build_converter(saved_model, ctx.profile, ctx.calib, on_image=task.advance)
        debugger, _ = quantization_debugger(converter, ctx.profile, ctx.source)
    f_int = interpreter(debugger.calibrated_model, preserve_all_tensors=True)
    q_int = interpreter(ctx.artifact / ctx.manifest.model_file, preserve_all_tensors=True)
    f_ops, q_ops = op_layers(f_int, keras_model), op_layers(q_int, keras_model)
    own = own_sqnr(debugger, ctx.images, {o.tensor for o in f_ops})
    pairs = _pair_ops(f_ops, q_ops)
    if not pairs:
        raise ConversionFailed(
            f"{ctx.artifact}: no op of the artifact matches the float model; was it converted from {ctx.source.spec}?"
        )
    f_graph, q_graph = _Graph(f_int), _Graph(q_int)
    f_of_q = {q_graph.out[q.index]: f_graph.out[f.index] for q, f in pairs}
    f_of_q[q_graph.inputs[0]] = f_graph.inputs[0]
    tracked: dict[tuple[int, int], SqnrAccumulator] = {}

    def track(q_tensor: int) -> tuple[int, int] | None:
        q_tensor = q_graph.look_through(q_tensor)
        f_tensor = f_of_q.get(q_tensor)
        if f_tensor is None:
            return None
        tracked.setdefault((q_tensor, f_tensor), SqnrAccumulator())
        return q_tensor, f_tensor

    points = [(q, f, track(q_graph.out[q.index]), [k for k in map(track, q_graph.data_inputs(q.index)) if k]) for q, f in pairs]
    with console.progress(
        f"{ctx.profile.name}: comparing every tensor of the fp32 and int8 models", total=len(ctx.images)
    ) as task:
        for image in ctx.images:
            f_graph.run(image)
            q_graph.run(image)
            for (qt, ft), acc in tracked.items():
                acc.add(f_graph.value(ft), q_graph.value(qt))
            task.advance()

    out = []
    for q, f, key, ins in points:
        out.append(
            LayerError(
                node=f"{q.op} {q.scope}",
                layer=q.part if q.part in ctx.parts else None,
                sqnr_db=tracked[key].db(),
                input_sqnr_db=min((tracked[k].db() for k in ins), default=None),
                own_sqnr_db=own.get(f.tensor),
            )
        )
    return out


def own_sqnr(debugger, images: np.ndarray, op_names: set[str]) -> dict[str, float]:
    """{op's output tensor name (one of ``op_names``): SQNR of the int8 op alone}, from the
    debugger's NumericVerify pairs. A debugger built from a converter reads them from an
    interpreter that reuses tensor memory (its layer_direct_compare_metrics get overwritten float
    values), so a second debugger runs the same debug model, which it opens with every tensor kept."""
    tf = frameworks.tensorflow()

    def signal(f, q, scale, zp):
        return float(np.sum(np.square(np.asarray(f, np.float64))))

    def noise(f, q, scale, zp):
        return float(np.sum(np.square(np.asarray(f, np.float64) - (np.asarray(q, np.float64) - zp) * scale)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        debug_model = tf.lite.Interpreter(model_content=debugger.quant_model)
        spec = _spec(debug_model.get_input_details()[0])
        graph = _Graph(debug_model)
        # NumericVerify(int8 tensor, float tensor): one of the two keeps the op's own name (the
        # other gets a digit appended), the float one read through a DEQUANTIZE for some ops
        verified = {}
        for op in graph.ops.values():
            if op["op_name"] == _VERIFY_OP:
                q_t, f_t = int(op["inputs"][0]), graph.look_through(int(op["inputs"][1]))
                found = [graph.details[t]["name"] for t in (f_t, q_t) if graph.details[t]["name"] in op_names]
                if found:
                    verified[q_t] = found[0]
        options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"signal": signal, "noise": noise})
        try:
            run = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=debugger.quant_model,
                debug_options=options,
                debug_dataset=lambda: ([quantize(x[None], spec)] for x in images),
            )
            run.run()
        except Exception as exc:
            raise ConversionFailed(
                f"TFLite QuantizationDebugger failed: {(str(exc).splitlines() or [exc.__class__.__name__])[0][:300]}"
            ) from None
    out = {}
    for key, stats in run.layer_statistics.items():  # "NumericVerify/<int8 tensor name>:<its index>"
        name = verified.get(int(key.rsplit(":", 1)[1]))
        if name is None:
            continue
        acc = SqnrAccumulator()
        acc.signal, acc.noise = float(stats["signal"]), float(stats["noise"])
        out[name] = acc.db()
    return out


def _spec(d: dict) -> TensorSpec:
    scale, zp = d["quantization"]
    return TensorSpec(d["name"], np.dtype(d["dtype"]).name, tuple(int(s) for s in d["shape"]), float(scale), int(zp))


def _pair_ops(f_ops, q_ops) -> list[tuple]:
    """(int8 op, float op) pairs: by output tensor name; ops renamed by the I/O type change (the
    input QUANTIZE's output becomes the model input) by position when both op sequences agree."""
    f_ops = [o for o in f_ops if o.op not in _QDQ]
    q_ops = [o for o in q_ops if o.op not in _QDQ]
    by_name = {o.tensor: o for o in f_ops}
    same_sequence = [o.op for o in f_ops] == [o.op for o in q_ops]
    pairs = []
    for i, q in enumerate(q_ops):
        f = by_name.get(q.tensor) or (f_ops[i] if same_sequence else None)
        if f is not None and f.op == q.op:
            pairs.append((q, f))
    return pairs


class _Graph:
    """One interpreter with every tensor kept: producers, data inputs, float values."""

    def __init__(self, interp):
        self.interp = interp
        self.details = {t["index"]: t for t in interp.get_tensor_details()}
        self.ops = {op["index"]: op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"}
        self.producer = {t: op for op in self.ops.values() for t in op["outputs"]}
        self.out = {i: int(op["outputs"][0]) for i, op in self.ops.items() if len(op["outputs"])}
        self.input = interp.get_input_details()[0]
        self.inputs = [int(d["index"]) for d in interp.get_input_details()]

    def data_inputs(self, op_index: int) -> list[int]:
        """Inputs computed from the image (not weights, biases or other constants)."""
        return [int(t) for t in self.ops[op_index]["inputs"] if t in self.producer or t in self.inputs]

    def look_through(self, tensor: int) -> int:
        while tensor in self.producer and self.producer[tensor]["op_name"] in _QDQ:
            tensor = int(self.producer[tensor]["inputs"][0])
        return tensor

    def run(self, image: np.ndarray) -> None:
        self.interp.set_tensor(self.input["index"], quantize(image[None], _spec(self.input)))
        self.interp.invoke()

    def value(self, tensor: int) -> np.ndarray:
        d = self.details[tensor]
        x = self.interp.get_tensor(tensor)
        if np.dtype(d["dtype"]).kind in "iu":
            scale, zp = d["quantization"]
            return dequantize(x, TensorSpec(d["name"], np.dtype(d["dtype"]).name, (), float(scale), int(zp)))
        return np.asarray(x, np.float32)
