"""ONNX Runtime per-layer quantization error, measured with ONNX Runtime's own debugging
facility, ``onnxruntime.quantization.qdq_loss_debug``.

The int8 model is the artifact's QDQ ``model.onnx``; the fp32 model is the one quantize_static
started from (the source exported again and run through quant_pre_process, as the converter
does), its tensors renamed after the QDQ model's (see the end). Both get every float tensor as an extra output
(modify_model_output_intermediate_tensors) and run the same images (collect_activations, graph
optimizations off: the QDQ model runs as written, float arithmetic on dequantized values, which
is what ORT's int8 kernels compute up to the rounding of their int32 sums).
create_activation_matching pairs, for every quantized tensor T, the fp32 model's T with the QDQ
model's T before its QuantizeLinear and after its DequantizeLinear (what the next op reads);
compute_activation_error gives ``xmodel_err`` (fp32 vs dequantized) and ``qdq_err`` (before vs
after the QuantizeLinear/DequantizeLinear pair: this tensor's own rounding and clipping).

Per op (Conv, Gemm/MatMul, residual Add):
- ``sqnr_db``: xmodel_err at its output, the activation fused into it included (ORT's QDQ
  quantizer drops a Relu after a Conv: the Conv then writes the Relu's tensor);
- ``input_sqnr_db``: xmodel_err at the dequantized tensor the op reads (for Add, the worse
  input). The model input is quantized too, so the first Conv's input SQNR is measured;
- ``own_sqnr_db``: the op's own quantization noise: its output's qdq_err and its int8 weights'
  SQNR (create_weight_matching / compute_weight_error; a weight SQNR of w dB is taken to cost
  about w dB at the output, exact for inputs uncorrelated with the weight error), noise powers
  added: -10·log10(10^(-a/10) + 10^(-w/10)). qdq_err alone misses the weights: per-tensor
  depthwise weights show only there.
The SQNR is Σref² / Σnoise² over all images (SqnrAccumulator). qdq_loss_debug's own SQNR
function is over the whole list it is given too, but holding every tensor of every image at
once does not fit for full-size Xception, so images run in chunks (its ``err_func`` parameter
returns an accumulator per chunk, summed here).

An op kept in float (nodes_to_exclude) has float weights, but where a quantized op reads its
output, that tensor is still quantized: its ``own_sqnr_db`` is that rounding alone (None if
nothing downstream quantizes it).

qdq_loss_debug pairs tensors and weights by name, but a second export does not repeat the
first's names: tf2onnx numbers generated nodes (``Conv__288``) with a per-process counter and
folded constants (the depthwise weights) in an order that follows Python's hash seed. So the
fp32 model's tensors and weights are first renamed after the QDQ model's, matching the graphs
node by node from the input (op type, inputs, attributes, weight shapes). The quantizer's only
other change it undoes is a dropped Relu; a dropped Clip (ReLU6) leaves tensors unpaired, which
fails loudly.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ... import frameworks
from .frameworks import onnxruntime, ort_quantization
from .convert import OPSET, preprocessed, segment_layers
from ...errors import ConversionFailed
from ...inspection.base import InspectContext, LayerError, SqnrAccumulator

TOOL = "onnxruntime.quantization.qdq_loss_debug"  # what `inspect` says it measured with

MEMORY_BUDGET = 1 << 30  # bytes of intermediate tensors (both models) held at once: sets the chunk of images
MAX_CHUNK = 16
_OPS = ("Conv", "Gemm", "MatMul", "Add")
_FUSED = ("Relu",)  # a Relu left after an op (kept in float) counts as part of it, as when quantized


@dataclasses.dataclass
class _Point:
    node: str
    layer: str | None
    out: tuple[str, str]  # (fp32 tensor, QDQ tensor the next ops read) at the op's output
    ins: list[tuple[str, str]]  # the same at each data input
    weight: str | None  # the weight's name in create_weight_matching, if quantized
    relu: bool  # the QDQ op writes the fp32 model's Relu output (the quantizer dropped the Relu)


def measure(ctx: InspectContext) -> list[LayerError]:
    ort_quantization()
    qd = importlib.import_module("onnxruntime.quantization.qdq_loss_debug")
    onnx = frameworks.onnx()
    qdq_path = ctx.artifact / ctx.manifest.model_file
    g = _Qdq(onnx.load(str(qdq_path)))
    pre = preprocessed(ctx.exports.onnx(OPSET))
    folder = pre.parent
    fp = _aligned_fp32(onnx.load(str(pre)), g, qdq_path)
    fp_path = folder / "inspect.fp32.onnx"
    onnx.save(fp, str(fp_path))
    points = _points(g, fp, {p.layer for p in ctx.parts.values()}, ctx.parts)
    fp_tensors = {t for n in fp.graph.node for t in [*n.input, *n.output]}
    missing = [f for p in points for f, _ in [p.out, *p.ins] if f not in fp_tensors]
    if missing:
        raise ConversionFailed(
            f"{qdq_path}: tensor {missing[0]} has no counterpart in the fp32 export of the model; "
            "pass the --model the artifact was converted from"
        )
    aug_q, aug_f = folder / "inspect.qdq.augmented.onnx", folder / "inspect.fp32.augmented.onnx"
    qd.modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
    qd.modify_model_output_intermediate_tensors(str(fp_path), str(aug_f))
    pairs = {pair for p in points for pair in [p.out, *p.ins]}
    relu = {p.out[0] for p in points if p.relu}
    xmodel, qdq_err = _activation_errors(qd, aug_f, aug_q, fp.graph.input[0].name, ctx.images, pairs, relu, ctx.profile.threads)
    weights = qd.compute_weight_error(qd.create_weight_matching(str(fp_path), str(qdq_path)))
    out = []
    for p in points:
        own = [qdq_err[p.out[0]].db()] if p.out[0] in qdq_err else []
        own += [weights[p.weight]] if p.weight in weights else []
        out.append(
            LayerError(
                node=p.node,
                layer=p.layer,
                sqnr_db=xmodel[p.out].db(),
                input_sqnr_db=min(xmodel[i].db() for i in p.ins),
                own_sqnr_db=_power_sum_db(own) if own else None,
            )
        )
    return out


def _activation_errors(qd, aug_f: Path, aug_q: Path, input_name: str, images, pairs, relu: set[str], threads):
    """SqnrAccumulators over all images: fp32 vs QDQ for each (fp32, QDQ) tensor pair, and
    qdq_err for each tensor create_activation_matching pairs, run in chunks of images. Where
    the quantizer dropped a Relu (``relu``), the tensor before QuantizeLinear is the op's output
    before the Relu, which the quantized range clips at 0: qdq_err compares Relu(pre) with post."""
    ort = onnxruntime("convert")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = int(threads or 0)
    xmodel: dict = defaultdict(SqnrAccumulator)
    qdq_err: dict = defaultdict(SqnrAccumulator)
    start, chunk = 0, 1  # the first image measures how many fit MEMORY_BUDGET
    while start < len(images):
        feed = [{input_name: images[start : start + chunk]}]  # one batch; collect_activations only iterates its reader
        q_acts = qd.collect_activations(str(aug_q), feed, session_options=so)
        f_acts = qd.collect_activations(str(aug_f), feed, session_options=so)
        matched = qd.create_activation_matching(q_acts, f_acts)
        # the pairs create_activation_matching makes, where its dequantized tensor is the one the op reads
        by_tool = {(f, q) for f, q in pairs if "float" in matched.get(f, {}) and matched[f]["post_qdq"] is q_acts.get(q)}
        for f in relu & {f for f, _ in by_tool}:
            matched[f]["pre_qdq"] = [np.maximum(a, 0) for a in matched[f]["pre_qdq"]]
        errs = qd.compute_activation_error({f: matched[f] for f, _ in by_tool}, err_func=_accumulate)
        for f, q in pairs:  # the others are not quantized (an op kept in float): compared as they are
            _add(xmodel[(f, q)], errs[f]["xmodel_err"] if (f, q) in by_tool else _accumulate(f_acts[f], q_acts[q]))
        for f, err in errs.items():
            _add(qdq_err[f], err["qdq_err"])
        held = sum(a.nbytes for acts in (q_acts, f_acts) for v in acts.values() for a in v)
        n = len(feed[0][input_name])
        start += n
        chunk = max(1, min(MAX_CHUNK, MEMORY_BUDGET * n // max(held, 1)))
        del q_acts, f_acts, matched, errs
    return xmodel, qdq_err


def _accumulate(ref, test) -> SqnrAccumulator:
    """compute_activation_error's err_func: Σref² and Σnoise² of one chunk, summed over chunks."""
    acc = SqnrAccumulator()
    for r, t in zip(ref, test, strict=True):
        acc.add(r, t)
    return acc


def _add(total: SqnrAccumulator, part: SqnrAccumulator) -> None:
    total.signal += part.signal
    total.noise += part.noise
    total.count += part.count


def _power_sum_db(dbs: list[float]) -> float:
    return -10.0 * math.log10(sum(10 ** (-d / 10) for d in dbs))


class _Qdq:
    """The QDQ model's graph, read through its QuantizeLinear/DequantizeLinear pairs."""

    def __init__(self, model):
        from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX

        self.model, self.suffix = model, TENSOR_NAME_QUANT_SUFFIX
        self.inits = {t.name: t for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers = defaultdict(list)
        for n in model.graph.node:
            for i in n.input:
                self.consumers[i].append(n)

    def weight(self, name: str):
        """The (quantized) initializer behind input ``name``, or None for computed tensors."""
        dq = self.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in self.inits:
            return self.inits[dq.input[0]]
        return self.inits.get(name)

    def source(self, name: str) -> str:
        """The float tensor before its QuantizeLinear/DequantizeLinear pair; for a weight the
        float name create_weight_matching gives it."""
        w = self.weight(name)
        if w is not None:
            return w.name.removesuffix(self.suffix)
        dq = self.producer.get(name)
        q = self.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else name

    def read(self, name: str) -> str:
        """What ops after ``name`` read: the output of its QuantizeLinear -> DequantizeLinear pair, if any."""
        for q in self.consumers[name]:
            for dq in self.consumers[q.output[0]] if q.op_type == "QuantizeLinear" else []:
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
        return name


def _points(g: _Qdq, fp, layers: set[str], parts: dict) -> list[_Point]:
    """The QDQ model's Conv/Gemm/MatMul ops and residual Adds (two computed inputs), each with
    its Keras part and the tensors to compare (``fp``: the fp32 model with the QDQ model's names)."""
    fp_relu = {n.output[0] for n in fp.graph.node if n.op_type == "Relu"}
    nodes = g.model.graph.node
    seg_layer = segment_layers([n.name for n in nodes] + [g.source(i) for n in nodes for i in n.input], layers)
    out = []
    for n in nodes:
        if n.op_type not in _OPS:
            continue
        weights = [g.source(i) for i in n.input if g.weight(i) is not None]
        data = [i for i in n.input if i and g.weight(i) is None]
        if n.op_type == "Add" and len(data) < 2:
            continue  # a bias Add
        data = data if n.op_type == "Add" else data[:1]
        result = n.output[0]
        nxt = g.consumers[result]
        if len(nxt) == 1 and nxt[0].op_type in _FUSED:
            result = nxt[0].output[0]
        dq = g.producer.get(n.input[1]) if n.op_type != "Add" else None
        weight = g.source(n.input[1]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        layer = next((seg_layer[s] for name in [*weights, n.name] for s in name.split("/") if s in seg_layer), None)
        relu = result in fp_relu and g.producer[result] is n
        out.append(
            _Point(n.name, _part(n, layer, parts), (result, g.read(result)), [(g.source(i), i) for i in data], weight, relu)
        )
    return out


def _part(node, layer: str | None, parts: dict) -> str | None:
    """The LayerPart of ``node`` in Keras ``layer``: a SeparableConv2D's grouped Conv is its
    depthwise part, its 1x1 Conv the pointwise one."""
    if layer is None:
        return None
    if node.op_type == "Conv":
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        split = f"{layer}/depthwise" if group > 1 else f"{layer}/pointwise"
        if split in parts:
            return split
    return layer if layer in parts else None


def _aligned_fp32(fp, g: _Qdq, where: Path):
    """``fp`` (the fp32 model) with its tensors and weights renamed after the QDQ model's. Nodes
    pair up in graph order by op type, attributes, paired inputs and weight shapes; the QDQ
    quantizer's only other change, dropping a Relu after a Conv (whose output then is the Relu's),
    pairs an fp32 Relu that has no QDQ twin with the tensor its input pairs with."""

    def key(n, inputs):
        attrs = tuple(sorted((a.name, a.SerializeToString()) for a in n.attribute))
        return n.op_type, attrs, tuple(inputs)

    index = defaultdict(list)
    for n in g.model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            w = [g.weight(i) for i in n.input]
            index[key(n, [tuple(t.dims) if t is not None else g.source(i) for i, t in zip(n.input, w)])].append(n)
    f_inits = {t.name: t for t in fp.graph.initializer}
    to_q = {f.name: q.name for f, q in zip(fp.graph.input, g.model.graph.input)} | {"": ""}  # fp32 tensor -> QDQ tensor
    for n in fp.graph.node:
        twins = index.get(key(n, [tuple(f_inits[i].dims) if i in f_inits else to_q.get(i, "?") for i in n.input]), [])
        if len(twins) > 1:
            raise ConversionFailed(f"{where}: {len(twins)} nodes of the artifact look like fp32 node {n.name}; cannot pair them")
        if twins:
            q = twins[0]
            to_q.update(zip(n.output, q.output))
            to_q.update((i, g.source(j)) for i, j in zip(n.input, q.input) if i in f_inits and g.weight(j) is not None)
        elif n.op_type == "Relu" and n.input[0] in to_q:
            to_q[n.output[0]] = to_q.pop(n.input[0])  # dropped by the quantizer: the QDQ tensor is after the Relu
    boundary = {v.name for v in [*fp.graph.input, *fp.graph.output]}
    rename = {f: q for f, q in to_q.items() if f not in boundary and f != q}
    for n in fp.graph.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    for t in [*fp.graph.initializer, *fp.graph.value_info]:
        t.name = rename.get(t.name, t.name)
    names = [o for n in fp.graph.node for o in n.output] + [t.name for t in fp.graph.initializer]
    if len(set(names)) != len(names):
        raise ConversionFailed(f"{where}: renaming the fp32 model after the artifact gave two tensors one name")
    return fp
