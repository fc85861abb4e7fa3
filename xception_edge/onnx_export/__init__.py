"""Keras -> ONNX without tracing: the functional graph written layer by layer (layers.py), for
the layers Xception and its usual heads are made of. For full-size Xception it holds about the
weights twice (~0.2 GB) and takes seconds, where tf2onnx's tracing peaks at 7.5 GB (#13).

    from xception_edge.onnx_export import export, Unsupported
    export(keras_model, "model.onnx", opset=17)   # raises Unsupported for a layer it does not write

The graph: one NHWC float32 input with a dynamic batch, as tf2onnx writes it (one Transpose to
NCHW inside), one output. Node names start with their Keras layer's name
(``block4_sepconv1/pointwise``), which is how ignored_scope and `inspect` find a layer. After
writing, the caller checks the export against Keras (``check``): it must agree within 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .layers import EMITTERS, FOLDS_BN, Graph, Tensor, Unsupported, bn_foldable, bn_scale_shift

__all__ = ["export", "check", "unsupported_layers", "Unsupported", "TOOL", "ATOL"]

TOOL = "xception_edge.onnx_export"
ATOL = 1e-4  # max |Δ| of the outputs (probabilities) against Keras on the check images


def _nodes(model) -> list:
    """The model's layer calls in topological order (inputs first)."""
    by_depth = getattr(model, "_nodes_by_depth", None)
    if by_depth is None:
        raise Unsupported(f"model {getattr(model, 'name', type(model).__name__)} is not a functional Keras model")
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _flat(model) -> tuple[list, dict[int, int]]:
    """Layer calls, nested functional models (a Sequential or Functional used as a layer) expanded
    in place: ``(layer, input tensor ids, output tensor ids)``, ids of KerasTensors, with each
    nested model's inputs and outputs joined to the tensors it was called on."""
    out: list = []
    alias: dict[int, int] = {}

    def walk(m):
        for node in _nodes(m):
            layer = node.operation
            ins = [alias.get(id(t), id(t)) for t in node.input_tensors]
            outs = [id(t) for t in node.output_tensors]
            if type(layer).__name__ == "InputLayer":
                continue
            if hasattr(layer, "_nodes_by_depth"):  # a nested model: its graph in place of the call
                if len(layer._inbound_nodes) != 1 or len(layer.inputs) != len(ins) or len(layer.outputs) != len(outs):
                    raise Unsupported(f"{layer.name}: a nested model called more than once, or with several inputs")
                for inner, outer in zip(layer.inputs, ins):
                    alias[id(inner)] = outer
                walk(layer)
                for inner, outer in zip(layer.outputs, outs):
                    alias[outer] = alias.get(id(inner), id(inner))
                continue
            out.append((layer, ins, outs))

    walk(model)
    return [(layer, [_resolve(alias, i) for i in ins], outs) for layer, ins, outs in out], alias


def _resolve(alias: dict[int, int], i: int) -> int:
    seen = set()
    while i in alias and i not in seen:
        seen.add(i)
        i = alias[i]
    return i


def unsupported_layers(model) -> list[str]:
    """Layers (as "name (Class)") this exporter cannot write; empty when it can write the model."""
    try:
        calls, _ = _flat(model)
    except Unsupported as exc:
        return [str(exc)]
    bad = [f"{layer.name} ({type(layer).__name__})" for layer, _, _ in calls if type(layer).__name__ not in EMITTERS]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        bad.append(f"model {model.name}: {len(model.inputs)} inputs and {len(model.outputs)} outputs (one of each is written)")
    return bad


def _folds(calls: list) -> dict[int, object]:
    """{id(conv or dense layer): the BatchNormalization folded into it}: a BN that alone reads the
    output of a Conv2D / DepthwiseConv2D / SeparableConv2D / Dense without activation."""
    readers: dict[int, int] = {}
    for _, ins, _ in calls:
        for i in ins:
            readers[i] = readers.get(i, 0) + 1
    producer = {outs[0]: layer for layer, _, outs in calls if len(outs) == 1}
    folds: dict[int, object] = {}
    for layer, ins, _ in calls:
        if type(layer).__name__ != "BatchNormalization" or len(ins) != 1 or not bn_foldable(layer):
            continue
        src = producer.get(ins[0])
        if src is None or readers.get(ins[0], 0) != 1 or type(src).__name__ not in FOLDS_BN or id(src) in folds:
            continue
        if getattr(getattr(src, "activation", None), "__name__", "linear") == "linear":
            folds[id(src)] = layer
    return folds


def _emit(g: Graph, calls: list, folds: dict[int, object], tensors: dict[int, Tensor]) -> None:
    """Every layer call's nodes, in order; a folded BN's output is its conv's."""
    skip = {id(bn) for bn in folds.values()}
    bn_output = {id(layer): outs[0] for layer, _, outs in calls if id(layer) in skip}
    for layer, ins, outs in calls:
        if id(layer) in skip:
            continue
        bn = folds.get(id(layer))
        try:
            args = [tensors[i] for i in ins]
        except KeyError:
            raise Unsupported(f"{layer.name}: reads a tensor that is not written before it") from None
        if len(outs) != 1:
            raise Unsupported(f"{layer.name}: {len(outs)} outputs")
        t = EMITTERS[type(layer).__name__](g, layer, args, bn_scale_shift(bn) if bn is not None else None)
        tensors[outs[0]] = t
        if bn is not None:
            tensors[bn_output[id(bn)]] = t


def export(model, path: str | Path, opset: int = 17) -> dict:
    """Write ``model`` as ONNX to ``path``; returns {"layers": n, "folded_bn": n, "nodes": n}.
    Raises Unsupported (nothing written) for a layer or a setting it does not cover."""
    from .. import frameworks

    onnx = frameworks.onnx()
    from onnx import TensorProto, helper, numpy_helper

    bad = unsupported_layers(model)
    if bad:
        raise Unsupported(f"layers the ONNX writer does not cover: {', '.join(bad[:5])}")
    calls, alias = _flat(model)
    folds = _folds(calls)
    g = Graph(helper, numpy_helper)
    (inp,) = model.inputs
    shape = list(inp.shape)
    if len(shape) != 4 or shape[-1] is None:
        raise Unsupported(f"input of shape {tuple(shape)}: an NHWC image input is written")
    in_name = g.unique(inp.name or "input")
    tensors: dict[int, Tensor] = {}
    tensors[_resolve(alias, id(inp))] = Tensor(g.node("Transpose", [in_name], "input/Transpose", perm=[0, 3, 1, 2]), 4, True)
    _emit(g, calls, folds, tensors)
    (out,) = model.outputs
    final = tensors.get(_resolve(alias, id(out)))
    if final is None:
        raise Unsupported(f"the model's output {out.name} is not written")
    out_name = final.name
    if final.nchw:
        out_name = g.node("Transpose", [out_name], "output/Transpose", perm=[0, 2, 3, 1])
    out_name = g.node("Identity", [out_name], "output_0")
    n = helper.make_tensor_value_info
    graph = helper.make_graph(
        g.nodes,
        model.name or "model",
        [n(in_name, TensorProto.FLOAT, ["N", *shape[1:]])],
        [n(out_name, TensorProto.FLOAT, ["N", *list(out.shape)[1:]])],
        initializer=g.initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))], producer_name=TOOL)
    proto.ir_version = min(proto.ir_version, 9)  # what onnxruntime 1.2x reads
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return {"layers": len(calls), "folded_bn": len(folds), "nodes": len(g.nodes)}


def check(model, path: str | Path, images: np.ndarray, atol: float = ATOL) -> float:
    """Max |Δ| between ONNX Runtime's outputs of the export (no graph optimization: the graph as
    written) and Keras's on ``images``; raises Unsupported past ``atol``."""
    from ..backends.onnxruntime.runtime import make_session  # the toolkit's one ONNX Runtime session

    session = make_session(path, 2, fuse=False)
    name = session.get_inputs()[0].name
    x = np.asarray(images, np.float32)
    got = session.run(None, {name: x})[0]
    want = np.asarray(model(x, training=False))
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.shape == want.shape else float("inf")
    if not diff <= atol:
        raise Unsupported(f"the ONNX writer's export differs from Keras by max |Δ| {diff:.3g} (limit {atol:g})")
    return diff
