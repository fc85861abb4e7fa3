"""Do an artifact's int8 weights equal the Keras model's own? For a model whose kernels already lie
on the backend's grid (transforms/adaround.py), a symmetric per-channel min-max weight quantizer
must reproduce them: the same integer codes, and dequantized weights that, divided by the folded
BatchNorm factor f = gamma / sqrt(var + eps), equal the Keras kernel.

    report = check(artifact_dir, keras_model)   # {"backend", "layers": [...], "unmatched": [...]}

Readers: LiteRT (.tflite: int8 tensors with per-channel scales, through the interpreter), ONNX
Runtime QDQ (.onnx: int8 initializers feeding DequantizeLinear), OpenVINO (.xml: i8 Constant ->
Convert -> [Subtract] -> Multiply -> Convolution / GroupConvolution / MatMul). Every weight is
brought to the (K, N) matrix AdaRound uses (columns: output channels, rows in Keras order).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .cle import _kind

KERNELS = {"Conv2D": ("kernel",), "Dense": ("kernel",), "DepthwiseConv2D": ("depthwise",)}
KERNELS["SeparableConv2D"] = ("depthwise", "pointwise")
TOL_CODE = 1e-3  # |z - round(z)| below which our weight counts as on the backend's grid (z: in steps)
TOL_STEP = 1e-4  # max |dequantized / f - ours| in steps of the backend's scale for "equal values"


def check(artifact: str | Path, model) -> dict:
    """Per matched kernel: are the artifact's codes and dequantized weights ours?"""
    artifact = Path(artifact)
    backend, tensors = _read(artifact)
    ours = expected(model)
    layers, unmatched, seen = [], [], set()
    for names, kind, codes, scale in tensors:
        key = _key(names, kind, ours)
        if key is None:
            unmatched.append({"tensor": names[0], "reason": "no Keras kernel of that name"})
            continue
        w, fold = ours[key]
        if codes.shape != w.shape:
            unmatched.append({"tensor": names[0], "key": key, "reason": f"shape {codes.shape} is not {w.shape}"})
            continue
        seen.add(key)
        layers.append(compare(key, w, fold, codes, scale))
    missing = sorted(set(ours) - seen)
    return {"backend": backend, "artifact": str(artifact), "layers": layers, "unmatched": unmatched, "float": missing}


def compare(key: str, w: np.ndarray, fold: np.ndarray, codes: np.ndarray, scale: np.ndarray) -> dict:
    """One kernel: ``w`` (K, N) ours, ``fold`` (N,) the folded BN factor, the artifact's ``codes``
    (K, N) and per-channel ``scale`` (N,)."""
    z = np.asarray(w, np.float64) * fold / scale  # our weights in the artifact's steps
    zr = np.round(z)
    off_grid = np.abs(z - zr) > TOL_CODE
    top = np.abs(z) >= np.abs(z).max(axis=0) - TOL_CODE  # each channel's largest weight(s)
    ties = (np.abs(np.abs(z - np.floor(z)) - 0.5) < TOL_CODE) & top
    wrong = off_grid | (zr != codes)
    dequant = codes * scale / fold
    step_err = np.abs(dequant - w) / (scale / np.abs(fold))
    entry = {
        "key": key,
        "equal": bool(not wrong.any() and step_err.max() <= TOL_STEP),
        "codes_equal": int(np.sum(~wrong)),
        "codes_differ": int(wrong.sum()),
        "ties": int(np.sum(ties & wrong)),
        "off_grid": int(off_grid.sum()),
        "max_step_error": float(step_err.max()),
        "backend_qmax": float(np.median(np.abs(z).max(axis=0))),
        "max_code": int(np.abs(codes).max()),
    }
    entry["reason"] = _reason(entry)
    return entry


def _reason(e: dict) -> str | None:
    if e["equal"]:
        return None
    d = e["backend_qmax"]
    if e["off_grid"] and e["off_grid"] == e["ties"] == e["codes_differ"]:
        return (
            f"only each channel's largest weight differs: the backend's scale is max|w| / {d:g}, which puts it "
            "half-way between two codes (NNCF's half-range overflow fix), and the backend rounds that tie either way"
        )
    if e["off_grid"]:
        return f"our weights are not on the backend's grid (its scale is max|w| / {d:g}; {e['off_grid']} weights between codes)"
    if e["codes_differ"]:
        return f"{e['codes_differ']} codes differ although our weights lie on the backend's grid"
    return f"dequantized values differ by {e['max_step_error']:.3g} steps"


def expected(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"layer:part": (kernel as a (K, N) matrix, per-channel BN fold factor (1 if none))}."""
    readers: dict[int, list] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                readers.setdefault(id(t._keras_history.operation), []).append(layer)
    out = {}
    for layer in model.layers:
        parts = KERNELS.get(_kind(layer), ())
        after = readers.get(id(layer), [])
        bn = after[0] if len(after) == 1 and _kind(after[0]) == "BatchNormalization" else None
        for part in parts:
            attr = {"kernel": "kernel", "pointwise": "pointwise_kernel"}.get(part, "depthwise_kernel")
            if _kind(layer) == "DepthwiseConv2D":
                attr = "kernel"
            w = getattr(layer, attr).numpy().astype(np.float64)
            w = w.reshape(w.shape[0] * w.shape[1], -1) if part == "depthwise" else w.reshape(-1, w.shape[-1])
            fold = np.ones(w.shape[1])
            if bn is not None and part != "depthwise":
                gamma = bn.gamma.numpy() if bn.scale else 1.0
                fold = np.asarray(gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon), np.float64) * fold
            out[f"{layer.name}:{part}"] = (w, fold)
    return out


def _key(names: list[str], kind: str, ours: dict) -> str | None:
    """The Keras kernel an artifact tensor belongs to, from its (and its consumer's) names."""
    layers = {k.split(":")[0]: k for k in ours}
    for name in names:
        for seg in name.split("/"):
            for cand in (seg, re.sub(r"_\d+$", "", seg)):
                if cand in layers:
                    parts = [k for k in ours if k.startswith(cand + ":")]
                    if len(parts) == 1:
                        return parts[0]
                    want = "depthwise" if kind == "depthwise" else "pointwise"
                    return f"{cand}:{want}" if f"{cand}:{want}" in ours else None
    return None


# -- readers: (names, "depthwise" | "conv" | "dense", codes (K, N), scale (N,)) -------------------


def _read(artifact: Path) -> tuple[str, list]:
    for pattern, backend, reader in (("*.tflite", "litert", _tflite), ("*.onnx", "onnxruntime", _onnx)):
        found = sorted(artifact.glob(pattern))
        if found:
            return backend, reader(found[0])
    found = sorted(artifact.glob("*.xml"))
    if found:
        return "openvino", _openvino(found[0])
    raise BadInput(f"{artifact} holds no .tflite, .onnx or OpenVINO .xml model")


def _tflite(path: Path) -> list:
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "for debugging purposes only": without it the delegate repacks the weights
        warnings.simplefilter("ignore")
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    out = []
    for d in it.get_tensor_details():
        qp = d["quantization_parameters"]
        if d["dtype"] != np.int8 or len(d["shape"]) not in (2, 4) or len(qp["scales"]) < 2:  # per-channel weights
            continue
        try:
            q = np.asarray(it.get_tensor(d["index"])).astype(np.int64)
        except ValueError:
            continue
        if len(qp["scales"]) != q.shape[qp["quantized_dimension"]] or np.any(qp["zero_points"]):
            continue
        scale = np.asarray(qp["scales"], np.float64)
        if q.ndim == 2:  # FULLY_CONNECTED (N, K)
            out.append(([d["name"]], "dense", q.T, scale))
        elif q.shape[0] == 1 and qp["quantized_dimension"] == 3:  # DEPTHWISE_CONV_2D (1, kh, kw, C*M)
            out.append(([d["name"]], "depthwise", q.reshape(q.shape[1] * q.shape[2], -1), scale))
        else:  # CONV_2D (O, kh, kw, I)
            out.append(([d["name"]], "conv", q.transpose(1, 2, 3, 0).reshape(-1, q.shape[0]), scale))
    return out


def _onnx(path: Path) -> list:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = numpy_helper.to_array(inits[node.input[0]])
        if q.dtype != np.int8 or q.ndim not in (2, 4):
            continue
        scale = np.ravel(numpy_helper.to_array(inits[node.input[1]])).astype(np.float64)
        if len(node.input) > 2 and np.any(numpy_helper.to_array(inits[node.input[2]])):
            continue
        user = consumers.get(node.output[0], [None])[0]
        names = [node.input[0]] + ([user.name] if user is not None else [])
        q = q.astype(np.int64)
        attrs = {a.name: a.i for a in user.attribute} if user is not None else {}
        if q.ndim == 2:  # MatMul / Gemm B: (K, N), or (N, K) with transB
            out.append((names, "dense", q.T if attrs.get("transB") else q, scale))
        elif attrs.get("group", 1) > 1:  # (C*M, 1, kh, kw)
            out.append((names, "depthwise", q.transpose(2, 3, 1, 0).reshape(-1, q.shape[0]), scale))
        else:  # (O, I, kh, kw)
            out.append((names, "conv", q.transpose(2, 3, 1, 0).reshape(-1, q.shape[0]), scale))
    return out


def _openvino(path: Path) -> list:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.i8:
            continue
        chain = _ov_chain(op)
        if chain is None:
            continue
        user, zero, scale = chain
        q = op.get_data().astype(np.int64)
        if zero is not None and np.any(zero):
            continue
        kind = user.get_type_name()
        names = [user.get_friendly_name()]
        if kind == "MatMul":  # (N, K) with transpose_b
            mat = q.T if user.get_attributes().get("transpose_b") else q
            out.append((names, "dense", mat, np.broadcast_to(np.ravel(scale), (mat.shape[1],)).astype(np.float64)))
        elif kind == "GroupConvolution":  # (G, M, 1, kh, kw)
            mat = q.reshape(q.shape[0] * q.shape[1], -1).T
            out.append((names, "depthwise", mat, np.ravel(scale).astype(np.float64)))
        elif kind == "Convolution":  # (O, I, kh, kw)
            out.append((names, "conv", q.transpose(2, 3, 1, 0).reshape(-1, q.shape[0]), np.ravel(scale).astype(np.float64)))
    return out


def _ov_chain(op):
    """(the weighted op, zero point or None, scale) after i8 Constant -> Convert -> [Subtract] -> Multiply."""
    zero = scale = None
    node = op
    for _ in range(6):
        users = list(node.output(0).get_target_inputs())
        if len(users) != 1:
            return None
        node = users[0].get_node()
        kind = node.get_type_name()
        if kind in ("Convolution", "GroupConvolution", "MatMul"):
            return (node, zero, scale) if scale is not None else None
        other = node.input_value(1).get_node() if kind in ("Subtract", "Multiply") else None
        if other is not None and other.get_type_name() == "Convert":  # an f16 constant
            other = other.input_value(0).get_node()
        if kind == "Subtract":
            zero = other.get_data()
        elif kind == "Multiply":
            scale = other.get_data()
        elif kind not in ("Convert", "Reshape"):
            return None
    return None
