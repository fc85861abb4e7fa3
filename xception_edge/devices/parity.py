"""Device-vs-host parity: the same inputs through the same artifact on both, compared as top-1
agreement and the largest output difference in output quantization steps.

An int8 output's step is its scale (manifest ``io.output``): identical int8 kernels agree to
0 steps, a different rounding order to 1. A float output (fp32 artifacts, ONNX Runtime's and
OpenVINO's int8 artifacts, which keep float I/O) has no step of its own; 1/256, an 8-bit
probability step, is used and the result says so.
"""

from __future__ import annotations

import numpy as np

from ..records import TensorSpec

DEFAULT_IMAGES = 16
FLOAT_STEP = 1 / 256
MIN_AGREEMENT = 0.99  # the default of the `min_device_agreement` gate


def pseudo_images(height: int, width: int, n: int = DEFAULT_IMAGES) -> np.ndarray:
    """``n`` fixed pseudo-images in the model's input range; the first is ``bench``'s latency input."""
    return np.random.default_rng(0).uniform(-1, 1, (n, height, width, 3)).astype(np.float32)


def output_step(spec: TensorSpec) -> tuple[float, str]:
    """(one output quantization step, where it comes from)."""
    if spec.quantized and spec.scale and spec.scale > 0:
        return float(spec.scale), "manifest io.output scale"
    return FLOAT_STEP, "1/256 (float output: an 8-bit probability step)"


def compare(host: np.ndarray, device: np.ndarray, spec: TensorSpec, *, inputs: str, reference: str) -> dict:
    """The parity record of device outputs against host outputs of the same inputs."""
    host = np.asarray(host, np.float64)
    device = np.asarray(device, np.float64)
    if host.shape != device.shape:
        raise ValueError(f"host outputs {host.shape} and device outputs {device.shape} differ in shape")
    step, step_from = output_step(spec)
    diff = np.abs(host - device) / step if host.size else np.zeros(1)
    same = host.argmax(-1) == device.argmax(-1)
    agreement = float(same.mean()) if len(same) else 1.0
    return {
        "images": int(len(same)),
        "inputs": inputs,
        "reference": reference,
        "top1_agreement": agreement,
        "flipped": [int(i) for i in np.flatnonzero(~same)],
        "max_step_diff": round(float(diff.max()), 3),
        "mean_step_diff": round(float(diff.mean()), 4),
        "output_step": step,
        "step_from": step_from,
        "min_agreement": MIN_AGREEMENT,
        "passed": agreement >= MIN_AGREEMENT,
    }
