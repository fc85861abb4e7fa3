"""ONNX Runtime calibration, once per run and model: the per-tensor ranges (``TensorsData``) that
``quantize_static`` would compute, written to the calibration cache it reads.

quantize_static calibrates with ``create_calibrator`` on the same model and op types, feeding the
images in chunks (``CalibStridedMinMax``) so that only one chunk's activations are held at once;
this does the same here, so that the ranges exist before any quantizer needs them:
``quantize_qdq`` then reads them from the cache, and for min-max, LiteRT's int8 takes them instead
of running TFLite's own (single-threaded, three times slower) calibration pass
(``backends/litert/shared_ranges.py``). For min-max the first image's ranges are kept beside the
cache: LiteRT checks its tensor mapping against them.

Percentile ranges are ours (``histograms.py``): ONNX Runtime's percentile collector is 3.5x the
min-max pass at full size and fails on near-constant tensors. The one pass, an image at a time,
also writes the min-max cache and both first-image files. Entropy is ONNX Runtime's own
calibrator, chunk by chunk as above.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ... import console
from ...calibration import CalibrationSet
from ...errors import ConversionFailed, first_line
from .frameworks import ort_quantization
from .histograms import PERCENTILE

CALIB_CHUNK = 8  # images whose intermediate tensors are held at once while calibrating (memory bound)
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def cache_paths(pre: Path, calib: CalibrationSet, method: str, percentile: float = PERCENTILE) -> tuple[Path, Path]:
    """The calibration cache of ``pre`` for these images and method (and percentile level), and
    its first-image file."""
    level = f"|{percentile!r}" if method == "percentile" else ""
    key = hashlib.sha256(f"{method}{level}|{calib.summary()['list_sha256']}|{len(calib)}".encode()).hexdigest()[:16]
    cache = pre.parent / f"calibration-{method}-{key}.json"
    return cache, cache.with_name(cache.stem + ".first-image.json")


def calibration_cache(
    pre: Path, calib: CalibrationSet, method: str, label: str, percentile: float = PERCENTILE
) -> tuple[Path, bool]:
    """The cache file holding ``pre``'s ranges on ``calib`` (made now unless an earlier target of
    the run made it), and whether it was reused. ``percentile``: the level of method percentile."""
    cache, first = cache_paths(pre, calib, method, percentile)
    reused = cache.exists() and (method == "entropy" or first.exists())
    with console.progress(f"{label}: calibrating ({method}) on {len(calib)} images", total=len(calib)) as task:
        if reused:
            task.advance(len(calib))
            return cache, True
        try:
            ranges, first_ranges = _calibrate(pre, calib, method, task, percentile)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise ConversionFailed(f"{label}: ONNX Runtime calibration failed: {first_line(exc)}") from None
    oq = ort_quantization()
    if first_ranges is not None:
        _write_json(first, first_ranges)
    oq.calibrate.save_tensors_data(ranges, cache)  # written atomically by ONNX Runtime
    return cache, False


def load_ranges(cache: Path) -> dict[str, tuple[float, float]]:
    """{tensor name: (min, max)} of a min-max cache."""
    data = ort_quantization().calibrate.load_tensors_data(cache)
    return {name: _pair(t.range_value) for name, t in data.data.items()}


def load_first(cache: Path) -> dict[str, tuple[float, float]]:
    first = cache.with_name(cache.stem + ".first-image.json")
    return {k: (float(v[0]), float(v[1])) for k, v in json.loads(first.read_text()).items()}


def _chunks(n: int, method: str) -> list[tuple[int, int]]:
    """quantize_static's chunks of CALIB_CHUNK images; for min-max the first image alone first
    (min and max merge exactly, so the ranges are the same)."""
    if method == "minmax" and n > 1:
        bounds = [0, 1, *range(1 + CALIB_CHUNK, n, CALIB_CHUNK), n]
    else:
        bounds = [*range(0, n, CALIB_CHUNK), n]
    return list(zip(bounds, bounds[1:]))


def _calibrate(pre: Path, calib: CalibrationSet, method: str, task, percentile: float = PERCENTILE):
    """ONNX Runtime's histogram calibrators print() their progress: kept off stdout, which
    belongs to --json."""
    with contextlib.redirect_stdout(io.StringIO()):
        if method == "percentile":
            return _percentile(pre, calib, task, percentile)
        return _calibrate_quietly(pre, calib, method, task)


def _percentile(pre: Path, calib: CalibrationSet, task, percentile: float = PERCENTILE):
    """Percentile ranges by our collector (``histograms.py``) in one pass of ONNX Runtime's
    augmented model, one image at a time; the pass's min-max ranges go into the min-max cache
    too (with their first-image file), so a min-max target of the run reuses them."""
    oq = ort_quantization()
    from .histograms import RangeCollector  # numpy only

    collector = RangeCollector()
    with tempfile.TemporaryDirectory(prefix="ort.quant.") as tmp:
        calibrator = oq.create_calibrator(
            pre,
            _op_types(),
            augmented_model_path=os.path.join(tmp, "augmented_model.onnx"),
            calibrate_method=oq.CalibrationMethod.Percentile,  # its augmented model: every tensor an output
            extra_options={},
        )
        session, wanted = calibrator.infer_session, set(calibrator.tensors_to_calibrate)
        names = [o.name for o in session.get_outputs()]
        input_name = session.get_inputs()[0].name
        for batch in calib.batches():
            outputs = session.run(None, {input_name: batch})
            collector.add_image({n: o for n, o in zip(names, outputs) if n in wanted})
            task.advance()
        del calibrator, session
    if collector.images != len(calib):
        raise ValueError(f"calibration read {collector.images} of {len(calib)} images")
    cache, first = cache_paths(pre, calib, "minmax")
    if not (cache.exists() and first.exists()):
        _write_json(first, collector.first())
        oq.calibrate.save_tensors_data(_tensors_data(oq, "MinMax", collector.minmax()), cache)
    return _tensors_data(oq, "Percentile", collector.percentile(percentile)), collector.first()


def _tensors_data(oq, method: str, ranges: dict[str, tuple[float, float]]):
    def f32(v: float):
        return np.array(v, dtype=np.float32)

    data = {k: oq.calibrate.TensorData(lowest=f32(lo), highest=f32(hi)) for k, (lo, hi) in ranges.items()}
    return oq.calibrate.TensorsData(getattr(oq.CalibrationMethod, method), data)


def _op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return list(set(list(QLinearOpsRegistry.keys()) + list(QDQRegistry.keys())))  # quantize_static's default


def _calibrate_quietly(pre: Path, calib: CalibrationSet, method: str, task):
    oq = ort_quantization()
    input_name = _input_name(pre)
    first_ranges = None
    with tempfile.TemporaryDirectory(prefix="ort.quant.") as tmp:
        calibrator = oq.create_calibrator(
            pre,
            _op_types(),
            augmented_model_path=os.path.join(tmp, "augmented_model.onnx"),
            calibrate_method=getattr(oq.CalibrationMethod, METHODS[method]),
            extra_options={},
        )
        reader = _reader(oq, input_name, calib, task)
        for start, end in _chunks(len(calib), method):
            reader.set_range(start, end)
            calibrator.collect_data(reader)
            if method == "minmax" and start == 0:
                first_ranges = {k: _pair(t.range_value) for k, t in calibrator.compute_data().data.items()}
        ranges = calibrator.compute_data()
        del calibrator
    if reader.used != len(calib):
        raise ValueError(f"calibration read {reader.used} of {len(calib)} images")
    return ranges, first_ranges


def _pair(range_value) -> tuple[float, float]:
    """(min, max) of one tensor's range (ONNX Runtime keeps each as a 1-element array)."""
    lo, hi = (np.asarray(v, np.float64).reshape(-1) for v in range_value)
    if lo.size != 1 or hi.size != 1:
        raise ValueError(f"a per-channel range of {lo.size} values where one per tensor was expected")
    return float(lo[0]), float(hi[0])


def _input_name(pre: Path) -> str:
    import onnx

    return onnx.load(str(pre), load_external_data=False).graph.input[0].name


def _reader(oq, input_name: str, calib: CalibrationSet, task):
    """The shared calibration iterator as a CalibrationDataReader, read chunk by chunk (set_range)."""

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self._batches = calib.batches()
            self._left = 0
            self.used = 0

        def __len__(self):
            return len(calib)

        def set_range(self, start_index: int, end_index: int):
            self._left = end_index - start_index

        def get_next(self):
            batch = next(self._batches, None) if self._left > 0 else None
            if batch is None:
                return None
            self._left -= 1
            self.used += 1
            task.advance()
            return {input_name: batch}

    return Reader()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
