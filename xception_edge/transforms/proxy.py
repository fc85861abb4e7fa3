"""The quantization-error proxy CLE chooses its scales by: the second layer of a pair run on the
intermediate tensor fake-quantized per tensor (8-bit, as every backend quantizes activations) with
its kernel fake-quantized per output channel (symmetric), compared with float as an SQNR in dB."""

from __future__ import annotations

import numpy as np

from .. import frameworks


def depthwise(x: np.ndarray, layer, kernel: np.ndarray) -> np.ndarray:
    tf = frameworks.tensorflow()
    s = layer.strides
    y = tf.nn.depthwise_conv2d(
        x.astype(np.float32),
        kernel.astype(np.float32),
        strides=(1, s[0], s[1], 1),
        padding=layer.padding.upper(),
        dilations=layer.dilation_rate,
    )
    return y.numpy()


def conv(x: np.ndarray, layer, kernel: np.ndarray) -> np.ndarray:
    tf = frameworks.tensorflow()
    y = tf.nn.conv2d(
        x.astype(np.float32),
        kernel.astype(np.float32),
        strides=layer.strides,
        padding=layer.padding.upper(),
        dilations=layer.dilation_rate,
    )
    return y.numpy()


def fake_act(x: np.ndarray, lo: float, hi: float, mode: str) -> np.ndarray:
    """Per-tensor 8-bit fake quantization: min-max with a zero point, or symmetric (unsigned
    0..255 over [0, max] for a non-negative tensor, -127..127 over max |x| otherwise)."""
    if mode == "symmetric":
        top = max(-lo, hi)
        levels, low = (255, 0) if lo >= 0 else (127, -127)
        scale = top / levels
        return x if scale <= 0 else np.clip(np.round(x / scale), low, levels) * scale
    scale = (hi - lo) / 255.0
    if scale <= 0:
        return x
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def fake_weight(w: np.ndarray, axes: tuple, bits: int) -> np.ndarray:
    """Symmetric per-output-channel fake quantization (``axes``: the axes reduced per channel)."""
    qmax = 2 ** (bits - 1) - 1
    top = np.abs(w).max(axis=axes, keepdims=True)
    scale = np.where(top > 0, top / qmax, 1.0)
    return np.clip(np.round(w / scale), -qmax, qmax) * scale


def second(pair, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    if pair.op2 == "pointwise":
        return x.astype(np.float64) @ kernel[0, 0].astype(np.float64)
    if pair.op2 == "depthwise":
        return depthwise(x, pair.layer, kernel)
    return conv(x, pair.layer, kernel)


def sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    err = float(np.sum((ref - np.asarray(out, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    return 200.0 if err == 0.0 else float(10 * np.log10(max(signal, 1e-30) / err))


def proxy(pair, x: np.ndarray, ref: np.ndarray, kernel: np.ndarray, s: np.ndarray, opts: dict) -> float:
    """SQNR (dB) of the second layer's output with the scaled intermediate tensor and kernel
    fake-quantized, against the float output."""
    lo = float(min(0.0, np.min(pair.cmin / s)))
    hi = float(max(0.0, np.max(pair.cmax / s)))
    xq = fake_act(x / s.astype(np.float32), lo, hi, opts["activation"])
    axes = (0, 1) if pair.op2 == "depthwise" else (0, 1, 2)
    wq = fake_weight(kernel * s[None, None, :, None], axes, int(opts["weight_bits"]))
    score = sqnr(ref, second(pair, xq, wq))
    return score if np.isfinite(score) else -np.inf
