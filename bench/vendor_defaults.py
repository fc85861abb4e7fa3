"""Each vendor's documented default int8 recipe, outside xception-edge (for bench/accuracy_table.py).

Every recipe starts from the same Keras model and calibrates on the same preprocessed images
(``calib``: (N, H, W, 3) float32, made by ``xception_edge.preprocess.load_images``), as that
vendor's own guide shows it, with no option changed from its default:

* LiteRT: TF's "full integer quantization" guide: ``TFLiteConverter.from_keras_model`` with
  ``Optimize.DEFAULT``, a representative dataset, ``TFLITE_BUILTINS_INT8`` and int8 input/output.
* OpenVINO: ``ov.convert_model`` of the Keras model's SavedModel export (input fixed to batch 1,
  the one choice made here: every model is timed on one image), then
  ``nncf.quantize(model, nncf.Dataset(images))`` with every default (preset performance for a CNN,
  subset_size 300, fast bias correction, overflow fix on the first layer only).
* ONNX Runtime: ``tf2onnx.convert.from_keras`` (opset 17), ``quant_pre_process`` (the docs recommend it before
  quantizing), then ``quantize_static`` with a CalibrationDataReader and its defaults (QDQ,
  per-tensor QInt8 weights and activations, MinMax, no reduce_range).

``build(backend, ...)`` writes the model into a folder and returns (its file, seconds); ``open_model``
opens that file with the vendor's runtime on ``threads`` threads as a ``VendorModel``. Frameworks
are imported inside the calls.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

OPSET = 17

RECIPES = {
    "litert": "tf.lite.TFLiteConverter.from_keras_model; optimizations=[Optimize.DEFAULT], representative_dataset "
    "(the calibration images, one at a time), supported_ops=[TFLITE_BUILTINS_INT8], int8 input and output",
    "openvino": "model.export(SavedModel) -> ov.convert_model(input=[1,H,W,3]) -> nncf.quantize(model, "
    "nncf.Dataset(calibration images)) with NNCF's defaults (preset performance, subset_size 300, "
    "fast_bias_correction, overflow_fix first_layer_only)",
    "onnxruntime": "tf2onnx.convert.from_keras(opset=17) -> quant_pre_process -> quantize_static("
    "CalibrationDataReader, quant_format=QDQ) with ORT's defaults (per_channel=False, QInt8 activations and "
    "weights, MinMax, reduce_range=False)",
}
RUNTIMES = {
    "litert": "ai_edge_litert Interpreter(num_threads={t}); input quantized with its scale/zero point, output dequantized",
    "openvino": 'ov.Core().compile_model(model, "CPU", {{"INFERENCE_NUM_THREADS": {t}}})',
    "onnxruntime": "InferenceSession(CPUExecutionProvider, intra_op_num_threads={t}), graph optimizations at their default (all)",
}


@dataclasses.dataclass
class VendorModel:
    """A vendor-default int8 model opened with its runtime: ``invoke`` runs one raw batch (what is
    timed), ``to_input`` / ``from_output`` convert float images and raw outputs around it."""

    name: str
    backend: str
    path: Path
    threads: int
    load_ms: float
    invoke: Callable[[np.ndarray], np.ndarray]
    to_input: Callable[[np.ndarray], np.ndarray]
    from_output: Callable[[np.ndarray], np.ndarray]
    recipe: str = ""
    runtime: str = ""

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed float images (N, H, W, 3) -> probabilities (N, classes), one image at a time."""
        return np.concatenate([self.from_output(self.invoke(self.to_input(images[i : i + 1]))) for i in range(len(images))])

    def size_bytes(self) -> int:
        files = [self.path, self.path.with_suffix(".bin")] if self.backend == "openvino" else [self.path]
        return sum(f.stat().st_size for f in files if f.is_file())


# ------------------------------------------------------------------ LiteRT
def litert_default(model, calib: np.ndarray, out: Path) -> Path:
    import tensorflow as tf

    def representative_dataset():
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = out / "model.tflite"
    path.write_bytes(converter.convert())
    return path


def open_litert(path: Path, threads: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]

    def invoke(x):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(outp["index"])

    return {
        "invoke": invoke,
        "to_input": lambda x: _quantize(x, *inp["quantization"], inp["dtype"]),
        "from_output": lambda q: _dequantize(q, *outp["quantization"]),
    }


def _quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    if not scale:
        return np.asarray(x, dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / np.float32(scale)) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if not scale:
        return np.asarray(q, np.float32)
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


# ------------------------------------------------------------------ OpenVINO + NNCF
def openvino_default(model, calib: np.ndarray, out: Path) -> Path:
    import nncf
    import openvino as ov

    saved = out / "saved_model"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    ov_model = ov.convert_model(str(saved), input=[1, *calib.shape[1:]])
    dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    quantized = nncf.quantize(ov_model, dataset)
    path = out / "model.xml"
    ov.save_model(quantized, str(path))
    return path


def open_openvino(path: Path, threads: int) -> dict:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()

    def invoke(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    return {"invoke": invoke, "to_input": lambda x: np.ascontiguousarray(x, np.float32), "from_output": _as_float}


def _as_float(y: np.ndarray) -> np.ndarray:
    return np.asarray(y, np.float32)


# ------------------------------------------------------------------ ONNX Runtime
def onnx_export(model, out: Path) -> Path:
    """tf2onnx's documented Keras entry point, opset 17 (NHWC float input, dynamic batch)."""
    import tf2onnx

    path = out / "model.fp32.onnx"
    tf2onnx.convert.from_keras(model, opset=OPSET, output_path=str(path))
    return path


def onnxruntime_default(model, calib: np.ndarray, out: Path) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = onnx_export(model, out)
    pre = out / "model.pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter([{input_name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self._items, None)

    path = out / "model.onnx"
    quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ)
    return path


def open_onnxruntime(path: Path, threads: int) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def invoke(x):
        return session.run([out_name], {in_name: x})[0]

    return {"invoke": invoke, "to_input": lambda x: np.asarray(x, np.float32), "from_output": _as_float}


# ------------------------------------------------------------------ the registry
BUILD = {"litert": litert_default, "openvino": openvino_default, "onnxruntime": onnxruntime_default}
OPEN = {"litert": open_litert, "openvino": open_openvino, "onnxruntime": open_onnxruntime}


def build(backend: str, model, calib: np.ndarray, out: Path) -> tuple[Path, float]:
    """Quantize ``model`` with ``backend``'s default recipe into ``out``: (model file, seconds)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = BUILD[backend](model, calib, out)
    return path, time.perf_counter() - t0


def open_model(backend: str, path: Path, threads: int) -> VendorModel:
    t0 = time.perf_counter()
    parts = OPEN[backend](path, threads)
    load_ms = (time.perf_counter() - t0) * 1000
    return VendorModel(
        name=f"vendor-{backend}-int8",
        backend=backend,
        path=path,
        threads=threads,
        load_ms=load_ms,
        recipe=RECIPES[backend],
        runtime=RUNTIMES[backend].format(t=threads),
        **parts,
    )
