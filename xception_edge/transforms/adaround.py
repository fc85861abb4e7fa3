"""AdaRound on the target's weight grid (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
Post-Training Quantization"; AIMET's adaround_optimizer / adaround_loss).

Each kernel is rounded to the backend's symmetric per-output-channel grid, s_c = max|W_c| / d
(d = 127 for int8; 64 for ONNX Runtime's reduce_range; 63.5 for NNCF's half-range overflow fix),
but whether each weight goes up or down is learnt layer by layer on the calibration activations:

    W~ = s * clip(floor(W / s) + h(V), -floor(d), floor(d)),  h(V) = clip(sigmoid(V)(zeta - gamma) + gamma, 0, 1)
    loss = mean_rows ||x W - x W~(V)||^2 + reg_weight * sum(1 - |2 h(V) - 1|^beta)

with zeta = 1.1, gamma = -0.1, beta annealed (cosine) from 20 to 2 after a 20% warm start
(AIMET's schedule), Adam (lr 1e-2: AIMET's 1e-3 is for 10000 steps; here 600). Each channel's largest |weight| keeps its value (d * s): the scale is
unchanged, so a backend's min-max per-channel quantizer recomputes the same s and the same codes
(grid_check.py verifies it on the artifacts). BN folding multiplies a channel by f, which leaves
the codes alone (up to sign). What each layer sees: the FLOAT model's layer input (one pass over the
calibration images) and the float layer's linear output as target (before bias, BN and
activation); a SeparableConv2D is two steps, depthwise (per (c, m) channel) then pointwise, each
on its own float input. Positions (output pixels) are subsampled; the record reports the output
SQNR with round-to-nearest and with AdaRound on held-out positions.

The float model changes on purpose (its kernels now lie on the grid): ``tolerance`` bounds max |Δp| (None: no limit).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import frameworks
from ..errors import BadInput, ConversionFailed
from .options import merge as options_merge
from . import proxy
from .cle import _kind, _plain, clone, predict

STEP_KINDS = ("depthwise", "pointwise", "conv", "dense")  # kernels (a SeparableConv2D has two)
DEFAULTS = {
    "weight_bits": 8,  # grid d = 2**(bits-1) - 1 unless weight_qmax is given
    "weight_qmax": None,  # the grid's divisor d: 127 int8, 64 ORT reduce_range, 63.5 NNCF overflow fix
    "depthwise_qmax": None,  # d for depthwise kernels (None: weight_qmax); NNCF's overflow fix leaves them 127
    "layer_qmax": None,  # {layer name: d} for single layers (NNCF's overflow_fix = "first_layer")
    "iterations": 600,  # Adam steps per kernel (AIMET: 10000)
    "batch_rows": 2048,  # output positions per step
    "max_images": 64,  # calibration images whose activations are sampled
    "max_rows": 16384,  # positions kept per kernel for the optimization
    "eval_rows": 4096,  # further held-out positions the SQNRs are measured on
    "layers": None,  # layer names; None: every Conv2D, SeparableConv2D, DepthwiseConv2D and Dense
    "kinds": STEP_KINDS,  # which kernels: depthwise (3x3 per channel), pointwise, conv, dense
    "reg_weight": 0.01,  # lambda
    "beta": (20.0, 2.0),  # start and end of the annealed exponent
    "warm_start": 0.2,  # share of the iterations without the rounding regularizer
    "learning_rate": 1e-2,  # AIMET: 1e-3 over 10000 steps; 1e-2 measured better at 200-600 steps
    "seed": 0,
    "batch": 8,  # images per forward pass while sampling
    "memory_mb": 1024,  # sampled activations held at once (more layers per pass over the images)
    "tolerance": None,  # max |Δp| of the float outputs allowed (None: not checked)
}
KINDS = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense")
ZETA, GAMMA = 1.1, -0.1


class _Step:
    """One kernel to round: a Keras variable seen as a (K, N) matrix whose columns are the
    output channels; ``kind`` says how a row of inputs meets it."""

    def __init__(self, layer, attr: str, kind: str, d: float):
        self.layer, self.attr, self.kind, self.d = layer, attr, kind, float(d)
        self.rows: list[np.ndarray] = []
        self.x: np.ndarray | None = None
        self.result: np.ndarray | None = None  # the rounded kernel, Keras layout
        self.entry: dict = {}

    @property
    def var(self):
        return getattr(self.layer, self.attr)

    def matrix(self) -> np.ndarray:
        w = self.var.numpy().astype(np.float64)
        return w.reshape(w.shape[0] * w.shape[1], -1) if self.kind == "depthwise" else w.reshape(-1, w.shape[-1])

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """The rows of this kernel's input for a batch of the layer's input ``x``."""
        if self.kind == "dense":
            return x.reshape(-1, x.shape[-1])
        if self.kind == "pointwise":
            y = proxy.depthwise(x, self.layer, self.layer.depthwise_kernel.numpy())
            return y.reshape(-1, y.shape[-1])
        kh, kw = self.var.shape[0], self.var.shape[1]
        patches = _patches(x, self.layer, kh, kw)
        if self.kind == "conv":
            return patches.reshape(-1, patches.shape[-1])
        return patches.reshape(-1, kh * kw, x.shape[-1])  # depthwise channel k = c*M + m reads input c

    def row_bytes(self) -> int:
        shape = self.var.shape
        return 4 * (shape[0] * shape[1] * shape[2] if self.kind == "depthwise" else int(np.prod(shape[:-1])))


def _patches(x: np.ndarray, layer, kh: int, kw: int) -> np.ndarray:
    tf = frameworks.tensorflow()
    s, r = layer.strides, layer.dilation_rate
    p = tf.image.extract_patches(
        x.astype(np.float32), [1, kh, kw, 1], [1, s[0], s[1], 1], [1, r[0], r[1], 1], layer.padding.upper()
    )
    return p.numpy()


def transform(model, calibration: np.ndarray | None, *, verify_images: np.ndarray, reference=None, **options):
    """A new copy of ``model`` with kernels on the grid, rounded by AdaRound, and its record
    (``reference``: ``model``'s outputs on ``verify_images``, when the caller has them)."""
    opts = _options(options)
    if calibration is None or not len(calibration):
        raise BadInput("adaround learns the rounding on calibration activations: pass --calibration")
    t0 = time.perf_counter()
    new = clone(model)
    steps, skipped = _steps(new, opts)
    images = np.asarray(calibration, np.float32)[: int(opts["max_images"])]
    collected, i = 0.0, 0
    for group in _groups(steps, opts):  # one pass over the images per group: bounded memory
        t1 = time.perf_counter()
        _collect(new, group, images, opts)
        collected += time.perf_counter() - t1
        for step in group:
            step.entry = _optimize(step, opts, seed=int(opts["seed"]) + i)
            step.x, i = None, i + 1
    for step in steps:
        step.var.assign(step.result.astype(np.float32))
    ref = reference if reference is not None else predict(model, verify_images)
    out = predict(new, verify_images)
    diff = float(np.max(np.abs(out - ref))) if steps else 0.0
    record = {"name": "adaround", "params": _jsonable(opts), "images": len(images), "skipped": skipped, "_outputs": out}
    record["layers"] = [step.entry for step in steps]
    record["max_abs_dp"] = diff
    record["top1_agreement"] = float(np.mean(out.argmax(-1) == ref.argmax(-1)))
    record["collect_seconds"] = round(collected, 2)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    record["_scales"] = {f"{step.layer.name}:{step.attr}": step.result.astype(np.float32) for step in steps}
    if opts["tolerance"] is not None and not diff <= opts["tolerance"]:
        raise ConversionFailed(
            f"transform adaround changed the float model's outputs by max |Δp| {diff:.3g} on {len(verify_images)} "
            f"images (limit {opts['tolerance']:g}); the model was not transformed"
        )
    return new, record


def _options(options: dict) -> dict:
    opts = options_merge("adaround", options, DEFAULTS)
    if opts["weight_qmax"] is None:
        opts["weight_qmax"] = 2 ** (int(opts["weight_bits"]) - 1) - 1
    if opts["depthwise_qmax"] is None:
        opts["depthwise_qmax"] = opts["weight_qmax"]
    opts["layer_qmax"] = {str(k): _divisor(k, v) for k, v in (opts["layer_qmax"] or {}).items()}
    for key in ("weight_qmax", "depthwise_qmax"):
        opts[key] = _divisor(key, opts[key])
    for key in ("iterations", "batch_rows", "max_images", "max_rows", "eval_rows", "batch", "memory_mb"):
        if int(opts[key]) < 1:
            raise BadInput(f"adaround: {key} {opts[key]} must be at least 1")
    if not 0.0 <= float(opts["warm_start"]) < 1.0:
        raise BadInput(f"adaround: warm_start {opts['warm_start']} must lie in [0, 1)")
    opts["beta"] = tuple(float(b) for b in opts["beta"])
    if opts["layers"] is not None:
        opts["layers"] = [opts["layers"]] if isinstance(opts["layers"], str) else [str(n) for n in opts["layers"]]
    kinds = [opts["kinds"]] if isinstance(opts["kinds"], str) else list(opts["kinds"])
    if not kinds or set(kinds) - set(STEP_KINDS):
        raise BadInput(f"adaround: kinds {opts['kinds']!r} must name some of: {', '.join(STEP_KINDS)}")
    opts["kinds"] = tuple(k for k in STEP_KINDS if k in kinds)
    return opts


def _divisor(key: str, value) -> float:
    d = float(value)
    if not (1 <= d <= 127 and (d * 2).is_integer()):
        raise BadInput(f"adaround: {key} {value!r} must be an integer or a half-integer from 1 to 127")
    return d


def apply_kernels(model, kernels: dict[str, np.ndarray]):
    """A copy of ``model`` with the recorded rounded kernels (``{"LAYER:attribute": kernel}``, what
    an artifact's transforms.npz holds) in place: the model the artifact was converted from."""
    new = clone(model)
    for key, kernel in kernels.items():
        name, _, attr = key.partition(":")
        try:
            var = getattr(new.get_layer(name), attr)
        except (ValueError, AttributeError):
            var = None
        if var is None or tuple(var.shape) != tuple(np.shape(kernel)):
            raise BadInput(f"the recorded AdaRound kernels name {key!r}, which this model does not have (or not that shape)")
        var.assign(np.asarray(kernel, np.float32))
    return new


def grid_options(profile, first_layers: tuple[str, ...] = ("block1_conv1",)) -> dict:
    """The options that put the kernels on ``profile``'s weight grid, as measured on the artifacts
    (grid_check): LiteRT and ONNX Runtime int8: max|w| / 127; ONNX Runtime reduce_range: / 64 (codes
    -64..64, depthwise too); NNCF's overflow fix: / 63.5 on Convolution and MatMul weights (codes
    -64..64, the channel's largest weight on a tie), depthwise (GroupConvolution) kept at / 127."""
    q = profile.quantization
    if profile.backend == "onnxruntime" and q.reduce_range:
        return {"weight_qmax": 64}
    if profile.backend == "openvino" and q.overflow_fix == "enable":
        return {"weight_qmax": 63.5, "depthwise_qmax": 127}
    if profile.backend == "openvino" and q.overflow_fix == "first_layer":
        return {"weight_qmax": 127, "layer_qmax": {name: 63.5 for name in first_layers}}
    return {"weight_qmax": 127}


def _jsonable(opts: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}


def _steps(model, opts: dict) -> tuple[list[_Step], list[dict]]:
    """The kernels to round (a SeparableConv2D gives two) and the skipped candidates."""
    names = opts["layers"]
    missing = sorted(set(names or ()) - {layer.name for layer in model.layers})
    if missing:
        raise BadInput(f"adaround: layers {', '.join(missing)} are not in model {model.name}")
    steps, skipped = [], []
    for layer in model.layers:
        kind = _kind(layer)
        d = opts["layer_qmax"].get(layer.name, opts["weight_qmax"])
        dw = opts["layer_qmax"].get(layer.name, opts["depthwise_qmax"])
        if (names is not None and layer.name not in names) or kind not in KINDS:
            if names is not None and layer.name in names:
                skipped.append({"layer": layer.name, "reason": f"{kind} has no kernel AdaRound rounds"})
            continue
        if not _plain(layer) or getattr(layer, "groups", 1) != 1:
            skipped.append({"layer": layer.name, "reason": "called more than once, grouped or not channels-last"})
        elif kind == "SeparableConv2D":
            steps += [_Step(layer, "depthwise_kernel", "depthwise", dw), _Step(layer, "pointwise_kernel", "pointwise", d)]
        elif kind == "DepthwiseConv2D":
            steps.append(_Step(layer, "kernel", "depthwise", dw))
        else:
            steps.append(_Step(layer, "kernel", "dense" if kind == "Dense" else "conv", d))
    return [step for step in steps if step.kind in opts["kinds"]], skipped


def _groups(steps: list[_Step], opts: dict) -> list[list[_Step]]:
    """Consecutive steps whose sampled rows together fit in ``memory_mb``."""
    budget = float(opts["memory_mb"]) * 2**20
    rows = int(opts["max_rows"]) + int(opts["eval_rows"])
    groups: list[list[_Step]] = []
    used = budget + 1
    for step in steps:
        size = rows * step.row_bytes()
        if used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(step)
        used += size
    return groups


def _collect(model, steps: list[_Step], images: np.ndarray, opts: dict) -> None:
    """A random sample of every kernel's input rows over ``images`` (one batched pass)."""
    if not steps:
        return
    keras = frameworks.keras()
    layers = list(dict.fromkeys(step.layer for step in steps))
    sub = keras.Model(model.inputs, [layer.input for layer in layers])
    rng = np.random.default_rng(int(opts["seed"]))
    batch = int(opts["batch"])
    per_batch = -(-(int(opts["max_rows"]) + int(opts["eval_rows"])) // -(-len(images) // batch))
    for i in range(0, len(images), batch):
        outs = sub(images[i : i + batch], training=False)
        outs = dict(zip(layers, outs if isinstance(outs, (list, tuple)) else [outs]))
        for step in steps:
            rows = step.inputs(np.asarray(outs[step.layer]))
            pick = rng.choice(len(rows), min(per_batch, len(rows)), replace=False)
            step.rows.append(rows[pick].astype(np.float32))
    for step in steps:
        step.x = np.concatenate(step.rows)
        step.rows = []


# -- the grid ------------------------------------------------------------------------------------


def grid(w: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scale per column, w / scale, the mask of each column's largest |w| (kept as is), clip c)."""
    top = np.abs(w).max(axis=0)
    s = np.where(top > 0, top / d, 1.0)
    q = w / s
    fixed = (np.abs(w) == top) & (top > 0)
    return s, q, fixed, np.full_like(s, math.floor(d))


def nearest(w: np.ndarray, d: float) -> np.ndarray:
    """Round-to-nearest on the same grid (the backend's own rounding of W)."""
    s, q, fixed, c = grid(w, d)
    return np.where(fixed, w, np.clip(np.round(q), -c, c) * s)


def rounded(w: np.ndarray, d: float, up: np.ndarray) -> np.ndarray:
    """W~ with the elements of ``up`` rounded up and the others down."""
    s, q, fixed, c = grid(w, d)
    return np.where(fixed, w, np.clip(np.floor(q) + up, -c, c) * s)


def _output(x, w, kind: str):
    """A kernel's linear output on rows ``x`` (numpy or tf; rows x channels). Depthwise rows are
    (P, kh*kw, C) and its matrix (kh*kw, C*M)."""
    if kind != "depthwise":
        return x @ w
    c = x.shape[-1]
    if isinstance(x, np.ndarray):
        return np.einsum("pkc,kcm->pcm", x, w.reshape(w.shape[0], c, -1)).reshape(len(x), -1)
    tf = frameworks.tensorflow()
    if w.shape[-1] == c:  # depth multiplier 1 (Xception): a weighted sum over the window
        return tf.reduce_sum(x * w[None], axis=1)
    y = tf.einsum("pkc,kcm->pcm", x, tf.reshape(w, (w.shape[0], c, -1)))
    return tf.reshape(y, (tf.shape(x)[0], -1))


# -- the optimization ----------------------------------------------------------------------------


def _optimize(step: _Step, opts: dict, seed: int) -> dict:
    """Learn the rounding of one kernel; set ``step.result``; return its record entry."""
    t0 = time.perf_counter()
    w = step.matrix()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(step.x))
    n_eval = min(int(opts["eval_rows"]), len(order) // 4)
    x_eval, x_fit = step.x[order[:n_eval]], step.x[order[n_eval:]]
    iterations = int(opts["iterations"])
    up = _learn(x_fit, w, step, opts, seed)
    w_ada, w_near = rounded(w, step.d, up), nearest(w, step.d)
    step.result = w_ada.reshape(step.var.shape)
    ref = _output(x_eval.astype(np.float64), w, step.kind)
    batch_rows = min(len(x_fit), int(opts["batch_rows"]))
    fixed = grid(w, step.d)[2]
    free = max(1, int(np.sum(~fixed)))
    seconds = time.perf_counter() - t0
    return {
        "layer": step.layer.name,
        "kind": step.kind,
        "qmax": step.d,
        "weights": int(w.size),
        "rows": int(len(x_fit)),
        "eval_rows": int(n_eval),
        "iterations": iterations,
        "seconds": round(seconds, 3),
        "ns_per_weight_row": round(1e9 * seconds / iterations / (w.size * batch_rows), 4),
        "sqnr_nearest_db": round(proxy.sqnr(ref, _output(x_eval, w_near, step.kind)), 3),
        "sqnr_adaround_db": round(proxy.sqnr(ref, _output(x_eval, w_ada, step.kind)), 3),
        "flipped_share": round(float(np.sum((w_ada != w_near) & ~fixed)) / free, 5),
    }


def _learn(x_fit: np.ndarray, w: np.ndarray, step: _Step, opts: dict, seed: int) -> np.ndarray:
    """AdaRound's soft-rounding optimization: which elements of ``w`` round up (0/1 array)."""
    tf = frameworks.tensorflow()
    s, q, fixed, c = grid(w, step.d)
    rest = np.clip(q - np.floor(q), 1e-4, 1 - 1e-4)
    v0 = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)  # h(V0) = rest: starts at the float weight
    v = tf.Variable(v0.astype(np.float32))
    consts = [tf.constant(a, tf.float32) for a in (np.floor(q), s, w, 1.0 - fixed, c)]
    x_all = tf.constant(x_fit)
    y_all = _output(x_all, tf.constant(w, tf.float32), step.kind)
    run = _loop(tf, step.kind, v, consts, x_all, y_all, opts, seed)
    run()
    return (v.numpy() >= 0).astype(np.float64)  # h(V) >= 0.5


def _loop(tf, kind: str, v, consts, x_all, y_all, opts: dict, seed: int):
    """A compiled loop of ``iterations`` Adam steps on the AdaRound loss."""
    base, s, w, free, c = consts
    iters, lam, lr = int(opts["iterations"]), float(opts["reg_weight"]), float(opts["learning_rate"])
    b0, b1 = opts["beta"]
    warm = float(opts["warm_start"]) * iters
    n, rows = int(x_all.shape[0]), min(int(opts["batch_rows"]), int(x_all.shape[0]))
    m1, m2 = tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))
    gen = tf.random.Generator.from_seed(seed)

    def soft():
        h = tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
        return h, free * tf.clip_by_value(base + h, -c, c) * s + (1.0 - free) * w

    @tf.function
    def run():
        for i in tf.range(iters):
            it = tf.cast(i, tf.float32)
            idx = gen.uniform([rows], 0, n, dtype=tf.int32)
            x, y = tf.gather(x_all, idx), tf.gather(y_all, idx)
            rel = tf.maximum(0.0, (it - warm) / max(iters - warm, 1.0))
            beta = b1 + 0.5 * (b0 - b1) * (1.0 + tf.cos(rel * math.pi))
            with tf.GradientTape() as tape:
                h, wq = soft()
                recon = tf.reduce_mean(tf.reduce_sum(tf.square(_output(x, wq, kind) - y), axis=-1))
                reg = tf.reduce_sum(free * (1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta)))
                loss = recon + tf.where(it >= warm, lam * reg, 0.0)
            g = tape.gradient(loss, v)
            m1.assign(0.9 * m1 + 0.1 * g)
            m2.assign(0.999 * m2 + 0.001 * tf.square(g))
            t = it + 1.0
            v.assign_sub(lr * (m1 / (1.0 - 0.9**t)) / (tf.sqrt(m2 / (1.0 - 0.999**t)) + 1e-8))

    return run
