"""TFLite calibration on every core, with the same result as TFLiteConverter's own.

TFLiteConverter feeds the representative images one by one to its calibrator, which runs on one
thread: 0.48 s per image of full-size Xception on a 2-core EPYC, half the three int8 targets'
conversion time. What it records per tensor is a min and a max, which merge exactly. So while
``every_core()`` is active, TFLiteConverter's calibrator is handed a share of the images and
worker processes (``calibrate_worker.py``: TFLite's calibration wrapper alone, no TensorFlow)
calibrate the other shares of the same float model; their min/max are merged into its
calibrated model in place. The rest of TFLiteConverter's work (its MLIR quantizer, buffer
de-duplication, metadata) is untouched; ``tests/test_calibration_sharing.py`` checks that the final
model is byte-identical to a one-process conversion.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ...errors import ConversionFailed

WORKER = Path(__file__).with_name("calibrate_worker.py")
_EXTENSION = "tensorflow.lite.python._pywrap_tensorflow_lite_calibration_wrapper"
MIN_SHARE = 4  # images: a worker is not worth its start below this


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def every_core(images: np.ndarray, on_image=None, workers: int | None = None, ranges=None):
    """While active, TFLiteConverter calibrates on ``images`` (the representative dataset's
    images, in any order) with ``workers`` processes in all (default: one per core). With
    ``ranges`` (``shared_ranges.py``), it calibrates on the first image and ``ranges(calibrated)``
    supplies every tensor's range over all images, unless it returns None."""
    from tensorflow.lite.python.optimize import calibrator as module

    workers = max(1, min(workers or cores(), len(images) // MIN_SHARE))
    original, so = module.Calibrator, wrapper_file()
    if (workers == 1 or so is None) and ranges is None:
        yield
        return

    class Shared(original):
        def calibrate(self, dataset_gen):  # the generator yields ``images``: not needed
            if ranges is not None:
                self._calibrator.Prepare([[1, *images.shape[1:]]])
                self._calibrator.FeedTensor([np.ascontiguousarray(images[:1])])
                out = ranges(bytearray(self._calibrator.Calibrate()))
                if out is not None:
                    if on_image is not None:
                        on_image(len(images))
                    return out
            if workers == 1 or so is None:  # min and max: the first image fed again changes nothing
                return original.calibrate(self, dataset_gen)
            return _calibrate(self._calibrator, self._model_content, images, so, workers, on_image)

    module.Calibrator = Shared
    try:
        yield
    finally:
        module.Calibrator = original


def wrapper_file() -> str | None:
    """TFLite's calibration extension module (what TFLiteConverter's calibrator wraps), or None
    when this TensorFlow keeps it elsewhere (then calibration runs in one process, as before)."""
    import importlib.util

    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(_EXTENSION)
        if spec is not None and spec.origin and spec.origin.endswith(".so"):
            return spec.origin
    return None


def _calibrate(wrapper, model: bytes, images: np.ndarray, so: str, workers: int, on_image) -> bytes:
    shares = np.array_split(np.arange(len(images)), workers)
    with tempfile.TemporaryDirectory(prefix="xception-edge-calibration-") as tmp:
        (Path(tmp) / "model.tflite").write_bytes(model)
        procs, outs = [], []
        try:
            for j, share in enumerate(shares[1:]):
                np.save(Path(tmp) / f"images{j}.npy", images[share[0] : share[-1] + 1])
                outs.append(Path(tmp) / f"calibrated{j}.tflite")
                procs.append(_start(so, Path(tmp), j, outs[-1], on_image))
            wrapper.Prepare([[1, *images.shape[1:]]])
            for i in shares[0]:
                wrapper.FeedTensor([np.ascontiguousarray(images[i : i + 1])])
                if on_image is not None:
                    on_image()
            calibrated = bytearray(wrapper.Calibrate())
            for proc, out in zip(procs, outs):
                _finish(proc)
                merge(calibrated, out.read_bytes())
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        return bytes(calibrated)


def _start(so: str, tmp: Path, j: int, out: Path, on_image) -> subprocess.Popen:
    args = [sys.executable, "-P", str(WORKER), so, str(tmp / "model.tflite"), str(tmp / f"images{j}.npy"), str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def count():
        for _ in proc.stdout:
            if on_image is not None:
                on_image()

    proc.reader = threading.Thread(target=count, daemon=True)
    proc.reader.start()
    return proc


def _finish(proc: subprocess.Popen) -> None:
    err = proc.stderr.read()
    proc.wait()
    proc.reader.join()
    if proc.returncode:
        last = next((line for line in reversed(err.strip().splitlines()) if line.strip()), "no message")
        raise ConversionFailed(f"a TFLite calibration worker failed (exit {proc.returncode}): {last}")


def merge(calibrated: bytearray, other: bytes) -> None:
    """``calibrated``'s per-tensor min/max widened in place to cover ``other``'s, a calibration of
    the same model on other images (TFLite's calibration stats are plain min and max)."""
    from tensorflow.lite.python import schema_py_generated as schema

    mine, theirs = schema.Model.GetRootAs(calibrated, 0), schema.Model.GetRootAs(other, 0)
    if mine.SubgraphsLength() != theirs.SubgraphsLength():
        raise ConversionFailed("TFLite calibration workers returned different models")
    for s in range(mine.SubgraphsLength()):
        a, b = mine.Subgraphs(s), theirs.Subgraphs(s)
        if a.TensorsLength() != b.TensorsLength():
            raise ConversionFailed("TFLite calibration workers returned different models")
        for t in range(a.TensorsLength()):
            qa, qb = a.Tensors(t).Quantization(), b.Tensors(t).Quantization()
            if qa is None or qa.MinLength() == 0:
                continue
            if qb is None or qb.MinLength() != qa.MinLength():
                raise ConversionFailed(f"TFLite calibration workers disagree on tensor {t}'s statistics")
            lo, hi = qa.MinAsNumpy(), qa.MaxAsNumpy()  # views into ``calibrated``
            np.minimum(lo, qb.MinAsNumpy(), out=lo)
            np.maximum(hi, qb.MaxAsNumpy(), out=hi)
