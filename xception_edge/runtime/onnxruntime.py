"""ONNX Runtime: one InferenceSession on the CPU execution provider. Imports onnxruntime only
(no TensorFlow, no onnx), so a device needs just `pip install 'xception-edge[onnxruntime]'`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import frameworks
from ..errors import BadInput
from .base import Runtime


def make_session(model_path: str | Path, threads: int):
    """CPU session: `threads` intra-op threads, one inter-op thread, sequential execution,
    every graph optimization (QDQ pairs fuse into QLinearConv / QLinearMatMul here)."""
    ort = frameworks.onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        text = str(exc).splitlines()[0][:300] if str(exc) else exc.__class__.__name__
        raise BadInput(f"{model_path} cannot be loaded by ONNX Runtime {ort.__version__}: {text}") from None


class OnnxRuntimeRuntime(Runtime):
    backend = "onnxruntime"

    def _load(self) -> None:
        self.session = make_session(self.folder / self.manifest["model_file"], self.threads)
        self._in = self.session.get_inputs()[0].name
        self._out = self.session.get_outputs()[0].name

    def invoke(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._out], {self._in: x})[0]


RUNTIME = OnnxRuntimeRuntime
