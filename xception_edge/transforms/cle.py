"""Cross-layer equalization (CLE): per-channel scale factors that move range between two adjacent
layers without changing the float function (Nagel et al. 2019, "Data-Free Quantization"; AIMET's
cross-layer scaling; SmoothQuant's migration strength alpha).

* separable pairs: inside a SeparableConv2D nothing sits between the depthwise and the pointwise
  kernel, so depthwise output channel k = c*M + m is divided by s_k and pointwise input row k
  multiplied by s_k;
* conv -> BatchNormalization -> ReLU -> conv: BN output channel c is divided by s_c (gamma and
  beta; ReLU commutes with a positive scale) and the next layer's input channel c multiplied by
  s_c. Only where each intermediate tensor has exactly one consumer (not before an Add).

Candidates per pair: no scaling; Nagel's weight-range equalization s = sqrt(r1 / r2) (r1: the
first side's per-channel weight range, BN folded in; r2: the second layer's input-channel weight
range); and, with calibration images, SmoothQuant's s = a^alpha / r2^(1 - alpha) (a: the
per-channel max |activation| of the intermediate tensor) for every alpha of a grid, normalized to
a geometric mean of 1. The kept candidate has the best proxy: the SQNR (dB) of the second layer's
output when the intermediate tensor is fake-quantized per tensor (8-bit min-max, as every backend
quantizes activations) and the second layer's kernel per output channel (symmetric int8). The
first side's kernel is quantized per output channel by every backend, which a per-channel scale
leaves unchanged: only the activation and the second kernel decide.
"""

from __future__ import annotations

import time

import numpy as np

from .. import console, frameworks
from .options import merge as options_merge
from . import proxy
from ..errors import BadInput, ConversionFailed

DEFAULTS = {
    "alphas": (0.5, 0.75, 1.0),  # SmoothQuant migration strengths tried per layer
    "bn_relu": True,  # also equalize conv -> BN -> ReLU -> conv pairs
    "max_images": 32,  # calibration images used for activation ranges
    "eval_images": 8,  # images kept to measure the proxy of a conv -> BN -> ReLU -> conv pair
    "max_rows": 16384,  # pixels kept to measure the proxy of a separable pair
    "memory_mb": 1024,  # bound on the activations held at once (full-size Xception at 299 px needs it)
    "activation": "asymmetric",  # activation fake-quantization: "asymmetric" (min-max) or "symmetric"
    "weight_bits": 8,  # 7 for ONNX Runtime's reduce_range
    "tolerance": 1e-4,  # max |Δp| of the softmax outputs allowed on the verification images
}
KINDS = ("SeparableConv2D", "Conv2D")


class _Pair:
    """Two layers and the intermediate tensor between them that one per-channel scale divides."""

    def __init__(self, kind: str, name: str, layer, bn=None, first=None):
        self.kind, self.name, self.layer, self.bn, self.first = kind, name, layer, bn, first
        if kind == "separable":
            self.op2 = "pointwise"
        else:
            self.op2 = "depthwise" if _kind(layer) == "SeparableConv2D" else "conv"
        self.cmin = self.cmax = None  # per-channel min / max of the intermediate tensor
        self.scale: np.ndarray | None = None  # the scales applied
        self.samples: list[np.ndarray] = []

    def second_kernel(self):
        if self.kind == "separable":
            return self.layer.pointwise_kernel
        return self.layer.depthwise_kernel if self.op2 == "depthwise" else self.layer.kernel


def transform(model, calibration: np.ndarray | None, *, verify_images: np.ndarray, reference=None, **options):
    """A new, equalized copy of ``model`` and its record; ``model`` itself is not changed.
    ``reference``: ``model``'s outputs on ``verify_images`` when the caller has them."""
    opts = _options(options)
    t0 = time.perf_counter()
    new = clone(model)
    record = {"name": "cle", "params": _jsonable(opts), "layers": [], "max_abs_dp": 0.0}
    if not any(_kind(layer) == "SeparableConv2D" for layer in new.layers):
        console.warn(f"cle: {model.name} has no SeparableConv2D layer; nothing to equalize, the model is unchanged")
        record["skipped"] = "no SeparableConv2D layer"
        return new, record
    pairs = _bn_relu_pairs(new) if opts["bn_relu"] else []
    pairs += [_Pair("separable", layer.name, layer) for layer in new.layers if _separable(layer)]
    if calibration is not None and len(calibration):
        _collect(new, pairs, np.asarray(calibration, np.float32)[: opts["max_images"]], opts)
    record["layers"] = [_equalize(pair, opts) for pair in pairs]
    record["_scales"] = {_key(pair): pair.scale for pair in pairs}  # for transforms.npz (not JSON)
    ref = reference if reference is not None else predict(model, verify_images)
    record["_outputs"] = predict(new, verify_images)  # the next transform's reference
    diff = float(np.max(np.abs(record["_outputs"] - ref)))
    record["max_abs_dp"] = diff
    record["seconds"] = round(time.perf_counter() - t0, 2)
    if not diff <= opts["tolerance"]:
        raise ConversionFailed(
            f"transform cle changed the float model's outputs by max |Δp| {diff:.3g} on {len(verify_images)} "
            f"images (limit {opts['tolerance']:g}); the model was not transformed"
        )
    return new, record


def _key(pair: _Pair) -> str:
    return f"{pair.kind}:{pair.name}"


def _pairs(model) -> dict[str, _Pair]:
    """Every pair CLE can scale in ``model``, by its key."""
    pairs = _bn_relu_pairs(model) + [_Pair("separable", layer.name, layer) for layer in model.layers if _separable(layer)]
    return {_key(p): p for p in pairs}


def apply_scales(model, scales: dict[str, np.ndarray]):
    """A copy of ``model`` with the recorded per-pair ``scales`` applied (what an artifact's
    transforms.npz holds): the Keras model the artifact was converted from, for `inspect`."""
    new = clone(model)
    pairs = _pairs(new)
    for key, s in scales.items():
        pair = pairs.get(key)
        if pair is None or len(np.ravel(s)) != pair.second_kernel().shape[2]:
            raise BadInput(
                f"the recorded CLE scales name {key!r}, which this model does not have (or not with that many channels)"
            )
        _apply(pair, np.asarray(s, np.float32))
    return new


def clone(model):
    """A new model with ``model``'s architecture and a copy of its weights."""
    keras = frameworks.keras()
    new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    return new


def per_pass(model, most: int = 16) -> int:
    """Images per forward pass: a whole Xception forward at 299 px holds ~180 MB of activations per
    image (measured), so 2 there, and up to ``most`` on small inputs."""
    h, w = model.input_shape[1:3]
    return int(max(1, min(most, 180_000 // max(1, (h or 1) * (w or 1)))))


def predict(model, images: np.ndarray, batch: int | None = None) -> np.ndarray:
    batch = batch or per_pass(model)
    outs = [np.asarray(model(images[i : i + batch], training=False)) for i in range(0, len(images), batch)]
    return np.concatenate(outs).astype(np.float64)


def _options(options: dict) -> dict:
    opts = options_merge("cle", options, DEFAULTS)
    opts["alphas"] = tuple(float(a) for a in opts["alphas"])
    if not all(0.0 <= a <= 1.0 for a in opts["alphas"]):
        raise BadInput(f"cle: alphas {opts['alphas']} must lie in [0, 1] (SmoothQuant's migration strength)")
    if opts["activation"] not in ("asymmetric", "symmetric"):
        raise BadInput(f"cle: activation {opts['activation']!r} must be 'asymmetric' or 'symmetric'")
    for key in ("max_images", "eval_images", "max_rows", "memory_mb"):
        if int(opts[key]) < 1:
            raise BadInput(f"cle: {key} {opts[key]} must be at least 1")
    return opts


def _jsonable(opts: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}


# -- the graph -----------------------------------------------------------------------------------


def _kind(layer) -> str:
    return layer.__class__.__name__


def _producer(tensor):
    return tensor._keras_history.operation


def _plain(layer) -> bool:
    """Called once in the graph, channels-last."""
    return len(layer._inbound_nodes) == 1 and getattr(layer, "data_format", "channels_last") == "channels_last"


def _separable(layer) -> bool:
    return _kind(layer) == "SeparableConv2D" and _plain(layer)


def _consumers(model) -> dict[int, int]:
    """How many layer inputs (and model outputs) read each layer's output, by id(layer)."""
    count: dict[int, int] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                count[id(_producer(t))] = count.get(id(_producer(t)), 0) + 1
    for t in model.outputs:
        count[id(_producer(t))] = count.get(id(_producer(t)), 0) + 1
    return count


def _is_relu(layer) -> bool:
    """ReLU(x / s) == ReLU(x) / s for s > 0: plain or leaky ReLU, no cap, no threshold."""
    if _kind(layer) == "ReLU":
        return layer.max_value is None and float(layer.threshold) == 0.0
    return _kind(layer) == "Activation" and getattr(layer.activation, "__name__", "") == "relu"


def _linear(layer) -> bool:
    return getattr(layer.activation, "__name__", "") == "linear"


def _bn_relu_pairs(model) -> list[_Pair]:
    """Every conv -> BN -> ReLU -> conv chain whose intermediate tensors each have one consumer."""
    count = _consumers(model)
    pairs = []
    for nxt in model.layers:
        if _kind(nxt) not in KINDS or not _plain(nxt) or getattr(nxt, "groups", 1) != 1:
            continue
        relu = _producer(nxt.input)
        if not (_is_relu(relu) and _plain(relu) and count.get(id(relu)) == 1):
            continue
        bn = _producer(relu.input)
        if not (_kind(bn) == "BatchNormalization" and _plain(bn) and count.get(id(bn)) == 1):
            continue
        if not bn.scale or bn.axis not in (-1, 3):
            continue
        first = _producer(bn.input)
        if _kind(first) not in KINDS or not _plain(first) or not _linear(first) or count.get(id(first)) != 1:
            continue
        if getattr(first, "groups", 1) != 1:
            continue
        pairs.append(_Pair("bn_relu", first.name, nxt, bn=bn, first=first))
    return pairs


# -- activations ---------------------------------------------------------------------------------


def _budget(model, pairs: list[_Pair], opts: dict) -> tuple[int, dict[int, int], dict[int, int]]:
    """Within ``memory_mb``: images per forward pass (every pair's input of each image is held at
    once), and per pair the rows (separable) or whole images (conv -> BN pairs) kept for the proxy."""
    budget = float(opts["memory_mb"]) * 2**20 / 4  # float32 values
    sizes = {id(p): int(np.prod(p.layer.input.shape[1:])) for p in pairs}
    batch = int(max(1, min(per_pass(model, 8), budget / 2 // max(1, sum(sizes.values())))))
    share = budget / 2 / max(1, len(pairs))  # the other half: what the proxy keeps
    rows = {id(p): int(max(256, min(opts["max_rows"], share // p.layer.input.shape[-1]))) for p in pairs}
    whole = {id(p): int(max(1, min(opts["eval_images"], share // sizes[id(p)]))) for p in pairs}
    return batch, rows, whole


def _collect(model, pairs: list[_Pair], images: np.ndarray, opts: dict) -> None:
    """Per-channel ranges of every pair's intermediate tensor on ``images`` (one pass, batched
    within ``memory_mb``) and a sample of it to measure the proxy on. A separable pair's
    intermediate tensor (the depthwise output) is computed here from the layer's input: Keras
    does not expose it."""
    keras = frameworks.keras()
    sub = keras.Model(model.inputs, [pair.layer.input for pair in pairs])
    rng = np.random.default_rng(0)
    batch, rows_kept, whole_kept = _budget(model, pairs, opts)
    batches = max(1, -(-len(images) // batch))
    for i in range(0, len(images), batch):
        outs = sub(images[i : i + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for pair, x in zip(pairs, outs):
            x = np.asarray(x)
            if pair.kind == "separable":
                x = proxy.depthwise(x, pair.layer, pair.layer.depthwise_kernel.numpy())
            lo, hi = x.min(axis=(0, 1, 2)), x.max(axis=(0, 1, 2))
            pair.cmin = lo if pair.cmin is None else np.minimum(pair.cmin, lo)
            pair.cmax = hi if pair.cmax is None else np.maximum(pair.cmax, hi)
            if pair.kind == "separable":
                rows, per_batch = x.reshape(-1, x.shape[-1]), max(1, rows_kept[id(pair)] // batches)
                pair.samples.append(rows[rng.choice(len(rows), min(per_batch, len(rows)), replace=False)])
            elif sum(len(s) for s in pair.samples) < whole_kept[id(pair)]:
                pair.samples.append(x[: whole_kept[id(pair)] - sum(len(s) for s in pair.samples)])


# -- scales --------------------------------------------------------------------------------------


def _guard(s: np.ndarray) -> np.ndarray:
    """Zero, infinite or NaN scales (dead channels, all-zero weights) become 1."""
    s = np.asarray(s, np.float64)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0)


def _smooth(amax: np.ndarray, r2: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant: s = a^alpha / r2^(1 - alpha), normalized to a geometric mean of 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = _guard(amax**alpha / r2 ** (1.0 - alpha))
    return s / np.exp(np.mean(np.log(s)))


def _first_range(pair: _Pair) -> np.ndarray:
    """Per-channel weight range of the first side: the depthwise kernel of a separable pair; the
    first layer's effective (BN-folded) kernel per output channel of a conv -> BN pair."""
    if pair.kind == "separable":
        return np.abs(pair.layer.depthwise_kernel.numpy()).max(axis=(0, 1)).reshape(-1)
    first, bn = pair.first, pair.bn
    if _kind(first) == "SeparableConv2D":
        dw = np.abs(first.depthwise_kernel.numpy()).max(axis=(0, 1)).reshape(-1)
        r = (np.abs(first.pointwise_kernel.numpy()[0, 0]) * dw[:, None]).max(axis=0)
    else:
        r = np.abs(first.kernel.numpy()).max(axis=(0, 1, 2))
    return r * np.abs(bn.gamma.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)


def _apply(pair: _Pair, s: np.ndarray) -> None:
    if pair.kind == "separable":
        var = pair.layer.depthwise_kernel
        dw = var.numpy()
        kh, kw, c, m = dw.shape
        var.assign((dw.reshape(kh, kw, c * m) / s).reshape(dw.shape).astype(dw.dtype))
    else:
        bn = pair.bn
        bn.gamma.assign((bn.gamma.numpy() / s).astype(np.float32))
        if bn.center:
            bn.beta.assign((bn.beta.numpy() / s).astype(np.float32))
    var = pair.second_kernel()
    var.assign((var.numpy() * s[None, None, :, None]).astype(np.float32))


# -- the proxy -----------------------------------------------------------------------------------


def _ratios(amax: np.ndarray) -> tuple[float | None, float | None]:
    """max / min and max / median of the live (non-zero) per-channel ranges."""
    live = amax[amax > 0]
    if not live.size:
        return None, None
    return float(live.max() / live.min()), float(live.max() / np.median(live))


def _equalize(pair: _Pair, opts: dict) -> dict:
    """Choose this pair's scales, apply them, and describe the choice."""
    kernel = pair.second_kernel().numpy()
    r2 = np.abs(kernel).max(axis=(0, 1, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        weight_based = _guard(np.sqrt(_first_range(pair) / r2))
    entry = {"layer": pair.name, "kind": pair.kind}
    if pair.kind == "bn_relu":
        entry["next"] = pair.layer.name
    if pair.cmax is None:  # no calibration images: data-free weight-range equalization
        pair.scale = np.asarray(weight_based, np.float32)
        _apply(pair, pair.scale)
        entry.update(alpha="weight", range_ratio_before=None, range_ratio_after=None)
        entry.update(sqnr_db_before=None, sqnr_db_after=None)
        return entry
    amax = np.maximum(np.abs(pair.cmin), np.abs(pair.cmax)).astype(np.float64)
    candidates = [(None, np.ones_like(r2, dtype=np.float64)), ("weight", weight_based)]
    candidates += [(a, _smooth(amax, r2, a)) for a in opts["alphas"]]
    x = np.concatenate(pair.samples)
    ref = proxy.second(pair, x, kernel)
    scores = [proxy.proxy(pair, x, ref, kernel, s, opts) for _, s in candidates]
    best = int(np.argmax(scores))  # the first of equals: no scaling unless a candidate beats it
    alpha, s = candidates[best]
    s = np.asarray(s, np.float32)  # what transforms.npz records, so `inspect` re-applies the same weights
    _apply(pair, s)
    pair.scale = np.asarray(s, np.float32)
    before, after = _ratios(amax), _ratios(amax / s)
    entry.update(alpha=alpha, range_ratio_before=before[0], range_ratio_after=after[0])
    entry.update(max_over_median_before=before[1], max_over_median_after=after[1])
    entry.update(sqnr_db_before=round(scores[0], 2), sqnr_db_after=round(scores[best], 2))
    entry["candidates_sqnr_db"] = {str(a): round(v, 2) for (a, _), v in zip(candidates, scores)}
    return entry
