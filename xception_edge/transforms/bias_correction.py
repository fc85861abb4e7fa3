"""Bias correction on the target's weight grid (Nagel et al. 2019, "Data-Free Quantization",
section 4.2, empirical variant; AIMET's empirical bias correction).

Post-training int8 rounds each kernel to a symmetric per-output-channel grid: q = round(w / s),
s = max|w| / qmax, clipped to -qmax..qmax (qmax = 127 for int8 on LiteRT and OpenVINO; ONNX
Runtime's reduce_range grid is -64..64 with s = max|w| / 64: ``weight_qmax=64``). The rounding
error Q(W) - W shifts each output channel's expected value by delta = E[conv(x, Q(W)) - conv(x, W)],
measured here on the layer's real input over the calibration images, and cancelled:

* conv (no bias) -> BatchNormalization that is its only consumer: ``moving_mean += delta``
  (BN(y + delta) with mean + delta is BN(y));
* a layer with a bias (Dense ``predictions``, a conv with ``use_bias=True``): ``bias -= delta``.

The backends fold BN into the conv before quantizing: W -> W * f per output channel, with
f = gamma / sqrt(var + eps). Per-channel symmetric quantization commutes with that: the channel's
scale becomes |f| * s, and round(w * f / (|f| * s)) = sign(f) * round(w / s) (the grid is
sign-symmetric and rounding is odd), so Q(W * f) = Q(W) * f and the folded conv sees the same
shift f * delta, which the folded bias beta - f * (mean + delta) cancels. So delta is computed on
the unfolded kernel.

For SeparableConv2D both kernels are quantized (the depthwise per (input channel, multiplier):
output channel k = c*M + m; the pointwise per output channel); the depthwise output is also
quantized by the backends, which this transform leaves alone (activation rounding is close to
unbiased). Unlike CLE this changes the float model on purpose (by -delta): its record reports the
float outputs' max |Δp| (refused above ``tolerance``) and how well the weight-quantized model
agrees with the original float model before and after the correction.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import console, frameworks
from ..errors import BadInput, ConversionFailed
from .options import merge as options_merge
from . import proxy
from .cle import _kind, _plain, _producer, clone, predict

DEFAULTS = {
    "weight_bits": 8,  # 8: int8 (-127..127); 7 for ONNX Runtime's reduce_range (see weight_qmax)
    "weight_qmax": None,  # the grid's divisor d (s = max|w| / d); None: 2**(bits-1) - 1; ORT reduce_range: 64
    "depthwise_qmax": None,  # d for depthwise kernels (None: weight_qmax); NNCF's overflow fix: 63.5, depthwise 127
    "layer_qmax": None,  # {layer name: d} for single layers (NNCF's overflow_fix = "first_layer")
    "max_images": 64,  # calibration images the shifts are measured on
    "layers": None,  # layer names to correct; None: every eligible layer
    "batch": 8,  # images per forward pass while measuring
    # max |Δp| the float outputs may move on the verification images; None: 0.05 on the int8 grid
    # (d = 127), scaled by 127 / d for a coarser one (the shifts grow with the step: 0.1 at d = 63.5)
    "tolerance": None,
}
KINDS = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense")


class _Site:
    """One layer whose output shift is corrected, where it is absorbed (``bn`` or its bias), and
    the running sums that measure the shift."""

    def __init__(self, layer, bn=None):
        self.layer, self.kind, self.bn = layer, _kind(layer), bn
        self.sink = "bn" if bn is not None else "bias"
        self.sums: list = [0.0, 0.0]
        self.count = 0
        self.seconds = 0.0
        self.delta: np.ndarray | None = None

    @property
    def key(self) -> str:
        return f"{self.sink}:{self.layer.name}"


def transform(model, calibration: np.ndarray | None, *, verify_images: np.ndarray, reference=None, **options):
    """A new, bias-corrected copy of ``model`` and its record; ``model`` itself is not changed.
    ``reference``: ``model``'s outputs on ``verify_images`` when the caller has them."""
    opts = _options(options)
    t0 = time.perf_counter()
    qmax = _qmax(opts)
    grid = Grid(qmax, opts["depthwise_qmax"], opts["layer_qmax"])
    new = clone(model)
    record = {"name": "bias_correction", "params": dict(opts, weight_qmax=qmax), "layers": [], "max_abs_dp": 0.0}
    if calibration is None or not len(calibration):
        raise BadInput("bias_correction measures each layer's output shift on calibration images: pass --calibration")
    sites, skipped = _sites(new, opts["layers"])
    record["skipped"] = skipped
    images = np.asarray(calibration, np.float32)[: int(opts["max_images"])]
    record["images"] = len(images)
    _measure(new, sites, images, grid, int(opts["batch"]))
    for site in sites:
        _correct(site, site.delta)
    record["layers"] = [_entry(site) for site in sites]
    record["_scales"] = {site.key: site.delta.astype(np.float32) for site in sites}  # for transforms.npz
    ref = reference if reference is not None else predict(model, verify_images)
    record["_outputs"] = predict(new, verify_images)  # the next transform's reference
    diff = float(np.max(np.abs(record["_outputs"] - ref))) if sites else 0.0
    record["max_abs_dp"] = diff
    names = [site.layer.name for site in sites]
    record["weight_quantized"] = {
        "before": _agreement(weight_quantized(model, names, qmax=grid), verify_images, ref),
        "after": _agreement(weight_quantized(new, names, qmax=grid), verify_images, ref),
    }
    record["seconds"] = round(time.perf_counter() - t0, 2)
    if not diff <= opts["tolerance"]:
        raise ConversionFailed(
            f"transform bias_correction changed the float model's outputs by max |Δp| {diff:.3g} on "
            f"{len(verify_images)} images (limit {opts['tolerance']:g}); the model was not transformed"
        )
    before, after = record["weight_quantized"]["before"], record["weight_quantized"]["after"]
    if after["mean_abs_dp"] > before["mean_abs_dp"] or after["top1_agreement"] < before["top1_agreement"]:
        console.warn(
            f"bias_correction: the weight-quantized model agrees less with the float model after the correction "
            f"(mean |Δp| {before['mean_abs_dp']:.3g} -> {after['mean_abs_dp']:.3g}, median per-image max |Δp| "
            f"{before['median_abs_dp']:.3g} -> {after['median_abs_dp']:.3g}, top-1 agreement "
            f"{before['top1_agreement']:.3f} -> {after['top1_agreement']:.3f} on {len(verify_images)} images)"
        )
    return new, record


def _options(options: dict) -> dict:
    opts = options_merge("bias_correction", options, DEFAULTS)
    for key in ("weight_qmax", "depthwise_qmax"):
        _check_qmax(opts[key], key)
    layer_qmax = opts["layer_qmax"] or {}
    if not isinstance(layer_qmax, dict):
        raise BadInput(f"bias_correction: layer_qmax must map layer names to grid divisors, got {layer_qmax!r}")
    for name, d in layer_qmax.items():
        _check_qmax(d, f"layer_qmax[{name!r}]")
    opts["layer_qmax"] = {str(k): float(v) for k, v in layer_qmax.items()} or None
    for key in ("max_images", "batch"):
        if int(opts[key]) < 1:
            raise BadInput(f"bias_correction: {key} {opts[key]} must be at least 1")
    if opts["layers"] is not None:
        names = [opts["layers"]] if isinstance(opts["layers"], str) else opts["layers"]
        opts["layers"] = [str(n) for n in names]
    if opts["tolerance"] is None:
        grids = [_qmax(opts), opts["depthwise_qmax"] or _qmax(opts), *(opts["layer_qmax"] or {}).values()]
        opts["tolerance"] = round(0.05 * 127 / min(grids), 4)
    opts["tolerance"] = float(opts["tolerance"])
    return opts


def _check_qmax(d, what: str) -> None:
    """A grid divisor: a whole or half number from 1 to 127 (63.5 is NNCF's overflow-fix grid)."""
    if d is None:
        return
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 1 <= d <= 127 or (2 * d) % 1:
        raise BadInput(f"bias_correction: {what} {d!r} must be a whole or half number from 1 to 127 (e.g. 127, 64, 63.5)")


def _qmax(opts: dict) -> float:
    return opts["weight_qmax"] if opts["weight_qmax"] is not None else 2 ** (int(opts["weight_bits"]) - 1) - 1


class Grid:
    """Which divisor d each kernel is quantized with: ``qmax`` by default, ``depthwise`` for
    depthwise kernels, ``layers`` for named layers (both kernels of a separable layer)."""

    def __init__(self, qmax: float, depthwise: float | None = None, layers: dict | None = None):
        self.qmax, self.depthwise, self.layers = qmax, depthwise, dict(layers or {})

    def of(self, layer, depthwise: bool = False) -> float:
        if layer.name in self.layers:
            return self.layers[layer.name]
        return self.depthwise if depthwise and self.depthwise is not None else self.qmax


def _grid(qmax) -> Grid:
    return qmax if isinstance(qmax, Grid) else Grid(qmax)


# -- the weight grid -----------------------------------------------------------------------------


def quantize(w: np.ndarray, axes: tuple, qmax: float) -> np.ndarray:
    """Symmetric per-output-channel fake quantization with s = max|w| / qmax, codes within
    -ceil(qmax)..ceil(qmax) (``axes``: the axes reduced per channel; qmax 63.5 is NNCF's overflow-fix
    grid, codes -64..64 with the channel's largest weight on the tie); an all-zero channel stays zero."""
    w64 = np.asarray(w, np.float64)
    top = np.abs(w64).max(axis=axes, keepdims=True)
    scale = np.where(top > 0, top / qmax, 1.0)
    limit = math.ceil(qmax)
    return (np.clip(np.round(w64 / scale), -limit, limit) * scale).astype(np.float32)


def _quantized_kernels(layer, qmax) -> dict[str, np.ndarray]:
    """{variable attribute: Q(kernel)} of a layer, each kernel on its backend's per-channel grid."""
    grid, kind = _grid(qmax), _kind(layer)
    if kind == "SeparableConv2D":
        return {
            "depthwise_kernel": quantize(layer.depthwise_kernel.numpy(), (0, 1), grid.of(layer, depthwise=True)),
            "pointwise_kernel": quantize(layer.pointwise_kernel.numpy(), (0, 1, 2), grid.of(layer)),
        }
    if kind == "DepthwiseConv2D":
        return {"kernel": quantize(layer.kernel.numpy(), (0, 1), grid.of(layer, depthwise=True))}
    axes = (0,) if kind == "Dense" else (0, 1, 2)
    return {"kernel": quantize(layer.kernel.numpy(), axes, grid.of(layer))}


def weight_quantized(model, layer_names, *, qmax: float | Grid = 127):
    """A copy of ``model`` whose named layers' kernels are replaced by Q(kernel) (weights only:
    activations, BN and biases stay float)."""
    new = clone(model)
    for name in layer_names:
        layer = new.get_layer(name)
        for attr, q in _quantized_kernels(layer, qmax).items():
            getattr(layer, attr).assign(q)
    return new


def _agreement(model, images: np.ndarray, ref: np.ndarray) -> dict:
    p = predict(model, images)
    diff = np.abs(p - ref)
    return {
        "mean_abs_dp": float(diff.mean()),
        "max_abs_dp": float(diff.max()),
        "median_abs_dp": float(np.median(diff.max(axis=-1))),  # per image: robust to one boundary image
        "top1_agreement": float(np.mean(p.argmax(axis=-1) == ref.argmax(axis=-1))),
    }


# -- the graph -----------------------------------------------------------------------------------


def _readers(model) -> dict[int, list]:
    """The layers (``None`` for a model output) reading each layer's output, by id(layer)."""
    readers: dict[int, list] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                readers.setdefault(id(_producer(t)), []).append(layer)
    for t in model.outputs:
        readers.setdefault(id(_producer(t)), []).append(None)
    return readers


def _sink(layer, readers: dict[int, list]) -> tuple[object, str | None]:
    """(the BN absorbing the shift or None for the bias, None) or (None, why the layer is skipped)."""
    if not _plain(layer):
        return None, "called more than once or not channels-last"
    if getattr(layer, "groups", 1) != 1:
        return None, "grouped convolution"
    if getattr(layer, "use_bias", False):
        return None, None
    after = readers.get(id(layer), [])
    bn = after[0] if len(after) == 1 else None
    if bn is None or _kind(bn) != "BatchNormalization":
        return None, "no bias, and its output does not go to one BatchNormalization only"
    if not _plain(bn) or bn.axis not in (-1, len(bn.input.shape) - 1):
        return None, f"its BatchNormalization {bn.name} is not a plain last-axis one"
    if getattr(layer.activation, "__name__", "") != "linear":
        return None, f"activation {layer.activation.__name__} between the layer and its BatchNormalization"
    return bn, None


def _sites(model, names: list[str] | None) -> tuple[list[_Site], list[dict]]:
    """The layers to correct and the skipped candidates (with the reason)."""
    readers = _readers(model)
    known = {layer.name for layer in model.layers}
    missing = sorted(set(names or ()) - known)
    if missing:
        raise BadInput(f"bias_correction: layers {', '.join(missing)} are not in model {model.name}")
    sites, skipped = [], []
    for layer in model.layers:
        if names is not None and layer.name not in names:
            continue
        if _kind(layer) not in KINDS:
            if names is not None:
                skipped.append({"layer": layer.name, "reason": f"{_kind(layer)} is not a weighted layer it corrects"})
            continue
        bn, why = _sink(layer, readers)
        if why:
            skipped.append({"layer": layer.name, "reason": why})
        else:
            sites.append(_Site(layer, bn))
    return sites, skipped


# -- the shifts ----------------------------------------------------------------------------------


def _measure(model, sites: list[_Site], images: np.ndarray, qmax: Grid, batch: int) -> None:
    """Every site's delta: the mean over images and positions of its output with Q(kernels) minus
    with the float kernels, on its real input (one forward pass of the float model per batch)."""
    if not sites:
        return
    keras = frameworks.keras()
    sub = keras.Model(model.inputs, [site.layer.input for site in sites])
    quantized = [_quantized_kernels(site.layer, qmax) for site in sites]
    for i in range(0, len(images), batch):
        outs = sub(images[i : i + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for site, q, x in zip(sites, quantized, outs):
            t0 = time.perf_counter()
            _accumulate(site, q, np.asarray(x, np.float32))
            site.seconds += time.perf_counter() - t0
    for site, q in zip(sites, quantized):
        t0 = time.perf_counter()
        site.delta = _delta(site, q)
        site.seconds += time.perf_counter() - t0


def _accumulate(site: _Site, q: dict, x: np.ndarray) -> None:
    """Add this batch's per-channel sums. Separable: sums of dw_q(x) - dw(x) and of dw(x) (the
    pointwise kernel is a per-pixel matrix, so the mean commutes with it)."""
    layer = site.layer
    if site.kind == "Dense":
        rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
        site.sums[0] = site.sums[0] + rows.sum(axis=0)
        site.count += len(rows)
        return
    if site.kind == "SeparableConv2D":
        dw = layer.depthwise_kernel.numpy()
        d = proxy.depthwise(x, layer, q["depthwise_kernel"] - dw)
        y = proxy.depthwise(x, layer, dw)
        site.sums[1] = site.sums[1] + y.astype(np.float64).sum(axis=(0, 1, 2))
    elif site.kind == "DepthwiseConv2D":
        d = proxy.depthwise(x, layer, q["kernel"] - layer.kernel.numpy())
    else:
        d = proxy.conv(x, layer, q["kernel"] - layer.kernel.numpy())
    site.sums[0] = site.sums[0] + d.astype(np.float64).sum(axis=(0, 1, 2))
    site.count += int(np.prod(d.shape[:3]))


def _delta(site: _Site, q: dict) -> np.ndarray:
    """E[y_q - y] per output channel from the sums."""
    layer, n = site.layer, max(site.count, 1)
    if site.kind == "Dense":
        dw = q["kernel"].astype(np.float64) - layer.kernel.numpy().astype(np.float64)
        return (site.sums[0] / n) @ dw
    if site.kind == "SeparableConv2D":
        pw = layer.pointwise_kernel.numpy()[0, 0].astype(np.float64)
        pwq = q["pointwise_kernel"][0, 0].astype(np.float64)
        # pw_q(dw_q x) - pw(dw x) = pw_q((dw_q - dw) x) + (pw_q - pw)(dw x)
        return (site.sums[0] / n) @ pwq + (site.sums[1] / n) @ (pwq - pw)
    return site.sums[0] / n


def _correct(site: _Site, delta: np.ndarray) -> None:
    """Cancel ``delta``: the BN's moving mean moves with it, or the bias against it."""
    if site.sink == "bn":
        var = site.bn.moving_mean
        var.assign((var.numpy().astype(np.float64) + delta).astype(np.float32))
    else:
        var = site.layer.bias
        var.assign((var.numpy().astype(np.float64) - delta).astype(np.float32))


def _entry(site: _Site) -> dict:
    delta = np.abs(site.delta)
    entry = {"layer": site.layer.name, "kind": site.kind, "sink": site.bn.name if site.bn is not None else "bias"}
    entry.update(channels=len(delta), mean_abs_shift=float(delta.mean()), max_abs_shift=float(delta.max()))
    if site.bn is not None:  # the shift in units of the channel's standard deviation (BN's input)
        sd = np.sqrt(site.bn.moving_variance.numpy().astype(np.float64) + site.bn.epsilon)
        entry["mean_abs_shift_sd"] = float(np.mean(delta / sd))
    entry["seconds"] = round(site.seconds, 4)
    return entry


def apply_shifts(model, shifts: dict[str, np.ndarray]):
    """A copy of ``model`` with the recorded shifts (the record's ``_scales``: {"bn:LAYER" or
    "bias:LAYER": delta}) cancelled again: the Keras model a bias-corrected artifact was converted
    from, for `inspect`."""
    new = clone(model)
    sites = {site.key: site for site in _sites(new, None)[0]}
    for key, delta in shifts.items():
        site = sites.get(key)
        if site is None or len(np.ravel(delta)) != site.layer.output.shape[-1]:
            raise BadInput(f"the recorded bias corrections name {key!r}, which this model does not have (or not that wide)")
        _correct(site, np.ravel(delta).astype(np.float64))
    return new
