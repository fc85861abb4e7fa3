"""OpenVINO runtime: the IR compiled for the CPU plugin, one InferRequest reused for every
batch. Imports only openvino (no TensorFlow, no NNCF).

The CPU plugin's default inference precision is bf16 on CPUs with AVX512-BF16 or AMX; the
artifact's manifest says which precision to run (the converter writes f32, so host
verification measures the model, not bf16 rounding).
"""

from __future__ import annotations

import numpy as np

from .frameworks import openvino
from ...errors import BadInput, first_line
from ...runtime.base import Runtime

DEVICE = "CPU"


class OpenVINORuntime(Runtime):
    backend = "openvino"

    def _load(self) -> None:
        ov = openvino()
        model_path = self.model_path
        self.device = DEVICE
        self.config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": self.manifest.fact("conversion", "cpu_inference_precision", "f32"),
        }
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
            self.compiled = core.compile_model(model, self.device, self.config)
        except RuntimeError as exc:
            first = first_line(exc)
            raise BadInput(f"{model_path} cannot be loaded by OpenVINO ({self.device}): {first[:300]}") from None
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # what the plugin really runs
            self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        except RuntimeError:
            self.inference_precision = "device default"
        self.request = self.compiled.create_infer_request()

    def invoke(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(x)})
        return self.request.get_output_tensor(0).data.copy()


RUNTIME = OpenVINORuntime
