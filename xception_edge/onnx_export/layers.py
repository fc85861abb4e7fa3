"""Keras layer -> ONNX nodes, one emitter per layer class (the layers of keras.applications'
Xception and of the heads users put on it). Every emitter gets the layer, its input tensors
(names in the ONNX graph, with their layout) and a ``Graph`` to add nodes and weights to, and
returns its output tensor.

Layout: the graph transposes its NHWC input to NCHW once; 4-D tensors stay NCHW from there on
(``Tensor.nchw``), so convolutions, pooling and batch normalization read them directly; Flatten
transposes back first (Keras flattens in NHWC order). Weights are converted in float64 and stored
as float32; a BatchNormalization that alone reads a convolution's output is folded into it
(``fold_bn``), as TFLite's, OpenVINO's and ONNX Runtime's own graph optimizers would.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np


class Unsupported(Exception):
    """A layer (or a setting of one) this exporter does not write; the caller falls back to tf2onnx."""


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    rank: int
    nchw: bool = False  # a 4-D tensor stored NCHW (the Keras tensor is NHWC)


class Graph:
    """The nodes and initializers being written (onnx.helper is imported by the caller)."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        base, n = name, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        name = self.unique(name)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        node_name = self.unique(name)
        out = node_name  # one output per node, named after it
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=node_name, **attrs))
        return out


# ----------------------------------------------------------------------------------- helpers
def _pads(layer) -> dict:
    """Keras ``same`` is TensorFlow's SAME: the odd pixel of padding goes at the end (ONNX SAME_UPPER)."""
    if layer.padding == "valid":
        return {"pads": [0, 0, 0, 0]}
    if layer.padding == "same":
        return {"auto_pad": "SAME_UPPER"}
    raise Unsupported(f"{layer.name}: padding {layer.padding!r}")


def _check_channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise Unsupported(f"{layer.name}: data_format {layer.data_format!r}")


def _activation(g: Graph, layer, t: Tensor, fn) -> Tensor:
    name = getattr(fn, "__name__", str(fn))
    if name == "linear":
        return t
    if name == "relu":
        return Tensor(g.node("Relu", [t.name], f"{layer.name}/Relu"), t.rank, t.nchw)
    if name == "relu6":
        lo, hi = g.weight(f"{layer.name}/min", np.array(0.0)), g.weight(f"{layer.name}/max", np.array(6.0))
        return Tensor(g.node("Clip", [t.name, lo, hi], f"{layer.name}/Clip"), t.rank, t.nchw)
    if name in ("sigmoid", "tanh"):
        return Tensor(g.node(name.capitalize(), [t.name], f"{layer.name}/{name.capitalize()}"), t.rank, t.nchw)
    if name in ("silu", "swish"):
        s = g.node("Sigmoid", [t.name], f"{layer.name}/Sigmoid")
        return Tensor(g.node("Mul", [t.name, s], f"{layer.name}/Mul"), t.rank, t.nchw)
    if name == "softmax":
        if t.rank != 2:
            raise Unsupported(f"{layer.name}: softmax over a {t.rank}-D tensor")
        return Tensor(g.node("Softmax", [t.name], f"{layer.name}/Softmax", axis=-1), t.rank)
    raise Unsupported(f"{layer.name}: activation {name!r}")


def _conv_out(g: Graph, layer, t: Tensor, w: np.ndarray, b: np.ndarray | None, fold, op_name: str, **attrs) -> Tensor:
    """A Conv node with weight ``w`` (ONNX OIHW, float64) and bias ``b``, a folded BN applied."""
    if fold is not None:
        scale, shift = fold
        w = w * scale[:, None, None, None]
        b = shift + (b if b is not None else 0.0) * scale
    inputs = [t.name, g.weight(f"{layer.name}/{op_name}/kernel", w)]
    if b is not None:
        inputs.append(g.weight(f"{layer.name}/{op_name}/bias", b))
    return Tensor(g.node("Conv", inputs, f"{layer.name}/{op_name}", **attrs), 4, True)


def _spatial(layer, t: Tensor) -> None:
    if t.rank != 4 or not t.nchw:
        raise Unsupported(f"{layer.name}: a {type(layer).__name__} on a {t.rank}-D input")


def bn_scale_shift(bn) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization in inference as y = x * scale + shift (float64)."""
    c = bn.moving_mean.shape[0]
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else np.ones(c)
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else np.zeros(c)
    mean, var = np.asarray(bn.moving_mean.numpy(), np.float64), np.asarray(bn.moving_variance.numpy(), np.float64)
    scale = gamma / np.sqrt(var + float(bn.epsilon))
    return scale, beta - mean * scale


def bn_foldable(bn) -> bool:
    return bn.axis in (-1, [-1], (-1,), 3, [3], (3,))


# ----------------------------------------------------------------------------------- emitters
def conv2d(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    _spatial(layer, t)
    _check_channels_last(layer)
    kh, kw = layer.kernel_size
    w = np.asarray(layer.kernel.numpy(), np.float64).transpose(3, 2, 0, 1)  # HWIO -> OIHW
    b = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else None
    attrs = {"kernel_shape": [kh, kw], "strides": list(layer.strides), "dilations": list(layer.dilation_rate)}
    attrs["group"] = int(getattr(layer, "groups", 1))
    out = _conv_out(g, layer, t, w, b, fold, "Conv", **attrs, **_pads(layer))
    return _activation(g, layer, out, layer.activation)


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """(kh, kw, C, M) -> (C*M, 1, kh, kw): output channel c*M + m reads input channel c, as in TensorFlow."""
    kh, kw, c, m = kernel.shape
    return np.asarray(kernel, np.float64).reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None]


def _depthwise(g: Graph, layer, t: Tensor, kernel: np.ndarray, b: np.ndarray | None, fold) -> Tensor:
    """A grouped Conv (one group per input channel) with a Keras depthwise kernel (kh, kw, C, M)."""
    _spatial(layer, t)
    _check_channels_last(layer)
    kh, kw, c, _ = kernel.shape
    attrs = {"kernel_shape": [kh, kw], "strides": list(layer.strides), "dilations": list(layer.dilation_rate), "group": int(c)}
    return _conv_out(g, layer, t, _depthwise_weight(kernel), b, fold, "depthwise", **attrs, **_pads(layer))


def depthwise_conv2d(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    b = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else None
    out = _depthwise(g, layer, t, layer.kernel.numpy(), b, fold)
    return _activation(g, layer, out, layer.activation)


def separable_conv2d(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    mid = _depthwise(g, layer, t, layer.depthwise_kernel.numpy(), None, None)
    pw = np.asarray(layer.pointwise_kernel.numpy(), np.float64).transpose(3, 2, 0, 1)
    b = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else None
    out = _conv_out(g, layer, mid, pw, b, fold, "pointwise", kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0])
    return _activation(g, layer, out, layer.activation)


def dense(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    if t.rank != 2:
        raise Unsupported(f"{layer.name}: Dense on a {t.rank}-D input")
    w = np.asarray(layer.kernel.numpy(), np.float64)
    b = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else np.zeros(w.shape[1])
    if fold is not None:
        scale, shift = fold
        w, b = w * scale[None, :], b * scale + shift
    ins = [t.name, g.weight(f"{layer.name}/kernel", w), g.weight(f"{layer.name}/bias", b)]
    out = Tensor(g.node("Gemm", ins, f"{layer.name}/Gemm"), 2)
    return _activation(g, layer, out, layer.activation)


def batch_normalization(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    if not bn_foldable(layer) or (t.rank == 4 and not t.nchw) or t.rank not in (2, 4):
        raise Unsupported(f"{layer.name}: BatchNormalization over axis {layer.axis} of a {t.rank}-D tensor")
    scale, shift = bn_scale_shift(layer)
    shape = (-1, 1, 1) if t.rank == 4 else (-1,)
    m = g.node("Mul", [t.name, g.weight(f"{layer.name}/scale", scale.reshape(shape))], f"{layer.name}/Mul")
    return Tensor(g.node("Add", [m, g.weight(f"{layer.name}/shift", shift.reshape(shape))], f"{layer.name}/Add"), t.rank, t.nchw)


def activation(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    return _activation(g, layer, t, layer.activation)


def relu(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
    threshold = float(getattr(layer, "threshold", 0.0) or 0.0)
    max_value = getattr(layer, "max_value", None)
    if slope or threshold:
        raise Unsupported(f"{layer.name}: ReLU with negative_slope or threshold")
    if max_value is None:
        return Tensor(g.node("Relu", [t.name], f"{layer.name}/Relu"), t.rank, t.nchw)
    lo, hi = g.weight(f"{layer.name}/min", np.array(0.0)), g.weight(f"{layer.name}/max", np.array(float(max_value)))
    return Tensor(g.node("Clip", [t.name, lo, hi], f"{layer.name}/Clip"), t.rank, t.nchw)


def _pool(g: Graph, layer, inputs: list[Tensor], fold=None, *, op: str) -> Tensor:
    (t,) = inputs
    _spatial(layer, t)
    _check_channels_last(layer)
    kh, kw = layer.pool_size
    attrs = {"kernel_shape": [kh, kw], "strides": list(layer.strides), **_pads(layer)}
    return Tensor(g.node(op, [t.name], f"{layer.name}/{op}", **attrs), 4, True)


def _global_pool(g: Graph, layer, inputs: list[Tensor], fold=None, *, op: str) -> Tensor:
    (t,) = inputs
    _spatial(layer, t)
    _check_channels_last(layer)
    out = g.node(op, [t.name], f"{layer.name}/{op}")
    if getattr(layer, "keepdims", False):
        return Tensor(out, 4, True)
    return Tensor(g.node("Flatten", [out], f"{layer.name}/Flatten", axis=1), 2)


def add(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    return _elementwise(g, layer, inputs, "Add", "Sum")


def multiply(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    return _elementwise(g, layer, inputs, "Mul", None)


def _elementwise(g: Graph, layer, inputs: list[Tensor], op: str, many: str | None) -> Tensor:
    if len({(t.rank, t.nchw) for t in inputs}) != 1:
        raise Unsupported(f"{layer.name}: {type(layer).__name__} of tensors of different ranks")
    t = inputs[0]
    if len(inputs) == 2 or many is None:
        out = inputs[0].name
        for i, other in enumerate(inputs[1:]):
            out = g.node(op, [out, other.name], f"{layer.name}/{op}" + (f"_{i}" if len(inputs) > 2 else ""))
        return Tensor(out, t.rank, t.nchw)
    return Tensor(g.node(many, [x.name for x in inputs], f"{layer.name}/{many}"), t.rank, t.nchw)


def concatenate(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    t = inputs[0]
    if len({(x.rank, x.nchw) for x in inputs}) != 1 or layer.axis not in (-1, t.rank - 1):
        raise Unsupported(f"{layer.name}: Concatenate over axis {layer.axis}")
    axis = 1 if t.nchw else -1
    return Tensor(g.node("Concat", [x.name for x in inputs], f"{layer.name}/Concat", axis=axis), t.rank, t.nchw)


def flatten(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    name = t.name
    if t.nchw:
        name = g.node("Transpose", [name], f"{layer.name}/Transpose", perm=[0, 2, 3, 1])
    return Tensor(g.node("Flatten", [name], f"{layer.name}/Flatten", axis=1), 2)


def identity(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    return t


def rescaling(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    scale, offset = np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
    if scale.ndim > 1 or offset.ndim > 1:
        raise Unsupported(f"{layer.name}: Rescaling with multi-dimensional scale or offset")

    def shaped(v):
        return v.reshape(-1, 1, 1) if (t.nchw and v.ndim == 1) else v

    m = g.node("Mul", [t.name, g.weight(f"{layer.name}/scale", shaped(scale))], f"{layer.name}/Mul")
    return Tensor(g.node("Add", [m, g.weight(f"{layer.name}/offset", shaped(offset))], f"{layer.name}/Add"), t.rank, t.nchw)


def softmax(g: Graph, layer, inputs: list[Tensor], fold=None) -> Tensor:
    (t,) = inputs
    axis = getattr(layer, "axis", -1)
    if t.rank != 2 or axis not in (-1, 1):
        raise Unsupported(f"{layer.name}: Softmax over axis {axis} of a {t.rank}-D tensor")
    return Tensor(g.node("Softmax", [t.name], f"{layer.name}/Softmax", axis=-1), 2)


EMITTERS: dict[str, Callable] = {
    "Conv2D": conv2d,
    "DepthwiseConv2D": depthwise_conv2d,
    "SeparableConv2D": separable_conv2d,
    "Dense": dense,
    "BatchNormalization": batch_normalization,
    "Activation": activation,
    "ReLU": relu,
    "MaxPooling2D": functools.partial(_pool, op="MaxPool"),
    "AveragePooling2D": functools.partial(_pool, op="AveragePool"),
    "GlobalAveragePooling2D": functools.partial(_global_pool, op="GlobalAveragePool"),
    "GlobalMaxPooling2D": functools.partial(_global_pool, op="GlobalMaxPool"),
    "Add": add,
    "Multiply": multiply,
    "Concatenate": concatenate,
    "Flatten": flatten,
    "Dropout": identity,
    "SpatialDropout2D": identity,
    "GaussianNoise": identity,
    "GaussianDropout": identity,
    "Rescaling": rescaling,
    "Softmax": softmax,
}
# The layers a BatchNormalization can fold into (the BN being their output's only reader).
FOLDS_BN = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")
