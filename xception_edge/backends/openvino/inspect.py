"""OpenVINO per-layer quantization error. OpenVINO has no quantization debugger, so the fp32
model (the source converted again, weighted ops renamed after their Keras layers, as the
converter does) and the artifact's NNCF int8 IR both get every weighted op's output, every
residual Add's output, and their data inputs as extra outputs; both run the same images on the
CPU plugin in f32 (its bf16 default would add bf16 rounding to both). The extra outputs change
the plugin's int8 fusions a little: the tapped IR is the artifact up to rounding, not bit-exact.

The two graphs are the same graph, the int8 one with FakeQuantize ops on edges. Weighted ops
carry their Keras names in both; residual Adds (two non-constant inputs) keep OpenVINO's
generated names, which differ between processes, so they are matched (to each other and to the
Keras Add layers) by the weighted ops nearest upstream of each input. A weighted op's output is
read after its bias (the folded BatchNorm: what the Keras layer outputs, and where NNCF's bias
correction lands). An op's input is read where its producer writes it, before any FakeQuantize:
the input quantization counts as the op's own error, as keeping the op in float
(ignored_scope) removes it too.

``own_sqnr_db``: the int8 op alone (its input FakeQuantizes, int8 weights, corrected bias) fed
the fp32 model's input activations, against the fp32 op's output.
"""

from __future__ import annotations

from ... import console
from .frameworks import openvino
from .convert import CPU_INFERENCE_PRECISION, name_keras_layers, source_model
from ...errors import BadInput
from ...model_io import _all_layers
from ...inspection.base import InspectContext, LayerError, SqnrAccumulator

TOOL = "intermediate outputs of the fp32 and int8 OpenVINO models"  # what `inspect` says it measured with

_WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")
_KERAS_WEIGHTED = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense")
_LOOK_THROUGH = ("FakeQuantize", "Convert")  # on a data edge: quantization, not computation
DEVICE = "CPU"


def measure(ctx: InspectContext) -> list[LayerError]:
    ov = openvino()
    fp = source_model(ctx.exports).clone()
    name_keras_layers(fp, ctx.source.keras_model)
    core = ov.Core()
    q = core.read_model(str(ctx.artifact / ctx.manifest.model_file))
    points = _match(fp, q, ctx.source.keras_model)
    _check_matched(ctx, points)
    pairs = _tap_ports(ctx, points)
    config = {
        "INFERENCE_PRECISION_HINT": CPU_INFERENCE_PRECISION,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": int(ctx.profile.threads or 2),
    }
    run_f = _runner(core, fp, [f for f, _ in pairs], config)
    run_q = _runner(core, q, [g for _, g in pairs], config)
    alone = [_op_alone(ov, core, p, config) for p in points]  # cuts q's graph: after run_q is compiled
    acc = [SqnrAccumulator() for _ in pairs]
    own = [SqnrAccumulator() for _ in points]
    for image in ctx.images:
        ref, test = run_f(image[None]), run_q(image[None])
        for a, r, t in zip(acc, ref, test):
            a.add(r, t)
        for p, o, run in zip(points, own, alone):
            o.add(ref[p.out], run([ref[i] for i in p.ins]))
    return [
        LayerError(
            node=p.node,
            layer=p.layer,
            sqnr_db=acc[p.out].db(),
            input_sqnr_db=min(acc[i].db() for i in p.ins) if p.ins else None,
            own_sqnr_db=o.db(),
        )
        for p, o in zip(points, own)
    ]


def _check_matched(ctx: InspectContext, points: list) -> None:
    found = {p.layer for p in points}
    if not any(p.f_op.get_type_name() in _WEIGHTED for p in points):
        raise BadInput(
            f"{ctx.artifact}: no weighted op of the int8 IR carries a layer name of {ctx.source.spec}; "
            "pass the model the artifact was converted from"
        )
    missing = [name for name, part in ctx.parts.items() if part.weighted and name not in found]
    if missing:
        console.warn(
            f"{ctx.artifact.name}: {len(missing)} Keras layer part(s) have no op in the int8 IR "
            f"and are not measured: {', '.join(missing[:6])}"
        )


def _tap_ports(ctx: InspectContext, points: list) -> list[tuple]:
    """The (fp32, int8) output pairs to read: each point's output and data inputs, once each;
    sets ``point.out`` / ``point.ins`` to positions in the returned list."""
    index: dict[tuple[int, int], int] = {}
    pairs: list[tuple] = []

    def tap(f_out, q_out) -> int:
        key = (f_out.get_node().get_instance_id(), f_out.get_index())
        if key not in index:
            if f_out.get_partial_shape() != q_out.get_partial_shape():
                raise BadInput(
                    f"{ctx.artifact}: {q_out.get_node().get_friendly_name()} has shape {f_out.get_partial_shape()} in {ctx.source.spec} but "
                    f"{q_out.get_partial_shape()} in the int8 IR; pass the model the artifact was converted from"
                )
            index[key] = len(pairs)
            pairs.append((f_out, q_out))
        return index[key]

    for p in points:
        p.out = tap(p.f_out, p.q_out)
        p.ins = [tap(_producer(p.f_op.input_value(i)), _producer(p.q_op.input_value(i))) for i in p.data]
    return pairs


# --------------------------------------------------------------------------- graph matching
class _Point:
    """One op measured: the same op in the fp32 and the int8 graph, and its Keras LayerPart."""

    def __init__(self, node: str, layer: str | None, f_op, q_op):
        self.node, self.layer, self.f_op, self.q_op = node, layer, f_op, q_op
        self.data: list[int] = []  # input indices that are not constants
        self.f_out = self.q_out = None  # the op's (or its bias's) output in each graph
        self.out, self.ins = -1, []  # positions of the output and data inputs among the taps


def _match(fp, q, keras_model) -> list[_Point]:
    f_consts, q_consts = _const_ids(fp), _const_ids(q)
    f_ops = {op.get_friendly_name(): op for op in fp.get_ordered_ops() if op.get_type_name() in _WEIGHTED}
    points = [
        _Point(name, name, f_ops[name], op)
        for op in q.get_ordered_ops()
        if op.get_type_name() in _WEIGHTED and (name := op.get_friendly_name()) in f_ops
    ]
    q_adds = _residual_adds(q, q_consts)
    f_adds = _pair(q_adds, _residual_adds(fp, f_consts))
    layers = _pair(q_adds, _keras_adds(keras_model))
    points += [
        _Point(q_add.get_friendly_name(), layer, f_add, q_add)
        for (_, q_add), f_add, layer in zip(q_adds, f_adds, layers)
        if f_add is not None
    ]
    for p in points:
        p.data = _data_inputs(p.q_op, q_consts)
        p.f_out, p.q_out = _layer_output(p.f_op, f_consts), _layer_output(p.q_op, q_consts)
    return points


def _pair(a: list[tuple], b: list[tuple]) -> list:
    """For each (key, item) of ``a``, the item of ``b`` with the same key (a key found once in
    each list); the rest in order, if as many are left on both sides; else None."""
    ka, kb = [k for k, _ in a], [k for k, _ in b]
    unique = {k for k in ka if k is not None and ka.count(k) == 1 and kb.count(k) == 1}
    by_key = {k: item for k, item in b if k in unique}
    rest_a = [i for i, k in enumerate(ka) if k not in unique]
    rest_b = [item for k, item in b if k not in unique]
    by_order = dict(zip(rest_a, rest_b)) if len(rest_a) == len(rest_b) else {}
    return [by_key[k] if k in unique else by_order.get(i) for i, k in enumerate(ka)]


def _upstream_key(keys: set):
    """A node's key from its data inputs' keys: the weighted op(s) nearest upstream."""
    return "input" if not keys else next(iter(keys)) if len(keys) == 1 else frozenset(keys)


def _residual_adds(model, consts: set[int]) -> list[tuple]:
    """(key, Add) for every Add of two computed tensors, in topological order; the key is the
    weighted ops nearest upstream of each input (the same in the fp32 and int8 graph)."""
    keys, out = {}, []
    for op in model.get_ordered_ops():
        ident, kind = op.get_instance_id(), op.get_type_name()
        if ident in consts:
            continue
        data = [v.get_node().get_instance_id() for v in op.input_values()]
        data = [i for i in data if i not in consts]
        keys[ident] = op.get_friendly_name() if kind in _WEIGHTED else _upstream_key({keys[i] for i in data})
        if kind == "Add" and len(data) >= 2:
            out.append((keys[ident], op))
    return out


def _keras_adds(keras_model) -> list[tuple]:
    """(key, Add layer name) for the Keras Add layers, keyed as _residual_adds keys OpenVINO's
    (None where the graph cannot be followed, e.g. inside a nested model: matched by order)."""
    keys: dict = {}
    out = []
    for layer in _all_layers(keras_model):
        kind = layer.__class__.__name__
        if kind in _KERAS_WEIGHTED:
            keys[layer.name] = layer.name + ("/pointwise" if kind == "SeparableConv2D" else "")
            continue
        try:
            nodes = layer._inbound_nodes
            ups = [keys.get(t._keras_history.operation.name) for t in (nodes[0].input_tensors if nodes else [])]
        except (AttributeError, IndexError):
            ups = [None]
        keys[layer.name] = None if None in ups else _upstream_key(set(ups))
        if kind == "Add":
            out.append((keys[layer.name], layer.name))
    return out


def _const_ids(model) -> set[int]:
    """Instance ids of the ops that compute constants (weights, biases, FakeQuantize limits)."""
    consts: set[int] = set()
    for op in model.get_ordered_ops():  # topological: inputs first
        inputs = [v.get_node().get_instance_id() for v in op.input_values()]
        if op.get_type_name() == "Constant" or (
            inputs and op.get_type_name() != "Parameter" and all(i in consts for i in inputs)
        ):
            consts.add(op.get_instance_id())
    return consts


def _data_inputs(op, consts: set[int]) -> list[int]:
    return [i for i, v in enumerate(op.input_values()) if v.get_node().get_instance_id() not in consts]


def _layer_output(op, consts: set[int]):
    """The op's output after the bias / folded BatchNorm applied to it alone (Add or Multiply by a
    constant): what the Keras layer outputs, and where NNCF's bias correction lands."""
    out = op.output(0)
    while len(targets := out.get_target_inputs()) == 1:
        node = next(iter(targets)).get_node()
        if node.get_type_name() not in ("Add", "Multiply", "Subtract") or len(_data_inputs(node, consts)) != 1:
            break
        out = node.output(0)
    return out


def _producer(value):
    """The output that computed ``value``, before any FakeQuantize/Convert on the edge."""
    while value.get_node().get_type_name() in _LOOK_THROUGH:
        value = value.get_node().input_value(0)
    return value


# --------------------------------------------------------------------------- running
def _runner(core, model, ports: list, config: dict):
    """Compile ``model`` with ``ports`` as extra outputs; returns x -> their values."""
    names = [out.get_any_name() for out in model.add_outputs(ports)]
    request = core.compile_model(model, DEVICE, config).create_infer_request()

    def run(x):
        request.infer({0: x})
        return [request.get_tensor(name).data.copy() for name in names]

    return run


def _op_alone(ov, core, point: _Point, config: dict):
    """The point's int8 op alone, its data inputs (before their FakeQuantizes) fed from outside:
    returns inputs -> output. Rewires the int8 graph (each cut is compiled right away)."""
    params = []
    for i in point.data:
        edge = point.q_op.input(i)
        while edge.get_source_output().get_node().get_type_name() in _LOOK_THROUGH:
            edge = edge.get_source_output().get_node().input(0)
        param = ov.op.Parameter(ov.Type.f32, edge.get_partial_shape())
        edge.replace_source_output(param.output(0))
        params.append(param)
    request = core.compile_model(ov.Model([point.q_out], params), DEVICE, config).create_infer_request()

    def run(inputs):
        request.infer(dict(enumerate(inputs)))
        return request.get_output_tensor(0).data.copy()

    return run
