"""ONNX Runtime: one InferenceSession on the CPU execution provider. Imports onnxruntime only
(no TensorFlow, no onnx), so a device needs just `pip install 'xception-edge[onnxruntime]'`."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from .frameworks import onnxruntime
from ...errors import BadInput, first_line
from ...hostinfo import cpu_flags
from ...records import Manifest
from ...runtime.base import Runtime


_X86 = {"x86_64", "amd64", "x86", "i686"}


def saturating_host(manifest: Manifest) -> str | None:
    """Why this host cannot run an int8 artifact made for ARM with its fused int8 kernels, if so.

    ONNX Runtime's x86 int8 kernels without VNNI add pairs of u8 x s8 products in 16 bits
    (pmaddubsw) and saturate; ARM64's kernels (and x86 VNNI's) accumulate in 32 bits. Such an
    artifact (full-range 8-bit weights) runs here unfused instead: DequantizeLinear -> float op ->
    QuantizeLinear, the QDQ model's reference semantics, which is what the device's exact int32
    kernels compute. Measured on the tiny demo, AMD EPYC (AVX2): top-1 agreement with Keras 69%
    fused, 95% unfused."""
    hw = (manifest.hardware or "").lower()
    if manifest.precision != "int8" or not hw.startswith(("arm", "aarch")):
        return None
    if platform.machine().lower() not in _X86 or {"avx512_vnni", "avx_vnni"} & set(cpu_flags()):
        return None
    return (
        "QDQ reference (unfused): this x86 host has no VNNI, and its fused int8 kernels saturate where "
        f"the {hw} device's do not; latency here is not the device's"
    )


def make_session(model_path: str | Path, threads: int, *, fuse: bool = True):
    """CPU session: `threads` intra-op threads, one inter-op thread, sequential execution,
    every graph optimization (QDQ pairs fuse into QLinearConv / QLinearMatMul here), or none
    (``fuse=False``: the QDQ reference semantics, in float)."""
    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = ort.GraphOptimizationLevel
    opts.graph_optimization_level = level.ORT_ENABLE_ALL if fuse else level.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        text = first_line(exc)
        raise BadInput(f"{model_path} cannot be loaded by ONNX Runtime {ort.__version__}: {text}") from None


class OnnxRuntimeRuntime(Runtime):
    backend = "onnxruntime"

    def _load(self) -> None:
        self.note = saturating_host(self.manifest)
        self.session = make_session(self.model_path, self.threads, fuse=self.note is None)
        self._in = self.session.get_inputs()[0].name
        self._out = self.session.get_outputs()[0].name

    def invoke(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._out], {self._in: x})[0]


RUNTIME = OnnxRuntimeRuntime
