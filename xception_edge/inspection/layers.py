"""The Keras model's layers as every backend's per-layer report names them: one entry per
computing part (a SeparableConv2D is two: ``name/depthwise`` and ``name/pointwise``), with its
kind and multiply-accumulates (MACs) per image. BatchNorm folds into the conv before it and
activations fuse into their producer, so they get no entry of their own."""

from __future__ import annotations

import dataclasses
import math

from ..model_io import _all_layers


@dataclasses.dataclass(frozen=True)
class LayerPart:
    name: str  # "block4_sepconv1/depthwise", "block1_conv1", "block4_add"
    layer: str  # the Keras layer: "block4_sepconv1"
    kind: str  # conv | depthwise | pointwise | shortcut-conv (strided 1x1) | dense | residual-add | pool
    macs: int  # multiply-accumulates per image
    weighted: bool  # can be kept in float by name (ignored scope / nodes_to_exclude / denylist)
    order: int  # position in the network


def _shape(t) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else 1 for d in t.shape)


def layer_parts(keras_model) -> dict[str, LayerPart]:
    """Every computing part of ``keras_model`` keyed by its name, in network order."""
    out: dict[str, LayerPart] = {}

    def add(name, layer, kind, macs, weighted):
        out[name] = LayerPart(name, layer, kind, int(macs), weighted, len(out))

    for layer in _all_layers(keras_model):
        kind = layer.__class__.__name__
        try:
            inp = layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input  # Add: several inputs
            in_shape = _shape(inp)
            out_shape = _shape(layer.output)
        except (AttributeError, ValueError, IndexError, TypeError):
            continue
        spatial = math.prod(out_shape[1:-1]) if len(out_shape) > 2 else 1
        cin = in_shape[-1]
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            one = (kh, kw) == (1, 1)
            kind_ = "conv" if not one else ("shortcut-conv" if max(layer.strides) > 1 else "pointwise")
            add(layer.name, layer.name, kind_, spatial * kh * kw * cin * out_shape[-1], True)
        elif kind == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            add(layer.name, layer.name, "depthwise", spatial * kh * kw * cin * layer.depth_multiplier, True)
        elif kind == "SeparableConv2D":
            kh, kw = layer.kernel_size
            mid = cin * layer.depth_multiplier
            add(f"{layer.name}/depthwise", layer.name, "depthwise", spatial * kh * kw * mid, True)
            add(f"{layer.name}/pointwise", layer.name, "pointwise", spatial * mid * out_shape[-1], True)
        elif kind == "Dense":
            add(layer.name, layer.name, "dense", math.prod(in_shape[1:]) * out_shape[-1], True)
        elif kind == "Add":
            add(layer.name, layer.name, "residual-add", 0, False)
        elif kind in ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            add(layer.name, layer.name, "pool", 0, False)
    return out


def total_macs(parts: dict[str, LayerPart]) -> int:
    return sum(p.macs for p in parts.values())


def float_mac_share(parts: dict[str, LayerPart], layers) -> float:
    """The share of the model's MACs in the given Keras layers (all their parts)."""
    chosen = set(layers)
    total = total_macs(parts)
    return sum(p.macs for p in parts.values() if p.layer in chosen) / total if total else 0.0
