"""LiteRT runtime: ai_edge_litert, then tflite_runtime, then tf.lite. Imports no TensorFlow
unless neither LiteRT package is installed."""

from __future__ import annotations

import numpy as np

from .frameworks import litert_interpreter
from ...errors import BadInput, first_line
from ...runtime.base import Runtime


class LiteRTRuntime(Runtime):
    backend = "litert"

    def _load(self) -> None:
        Interpreter = litert_interpreter()
        model_path = self.model_path
        try:
            self.interpreter = Interpreter(model_path=str(model_path), num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BadInput(f"{model_path} cannot be loaded by LiteRT: {first_line(exc)}") from None
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]

    def invoke(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out["index"])


RUNTIME = LiteRTRuntime
