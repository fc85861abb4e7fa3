"""LiteRT int8 calibrated with ONNX Runtime's ranges: calibrate once, quantize twice.

TFLite's calibrator is a min/max per activation tensor over the representative images, run on
one thread (0.46 s per image of full-size Xception on a 2-core EPYC). ONNX Runtime's min-max
calibration of the run's ONNX export records the same min/max per tensor in a third of the time,
and an ONNX Runtime int8 target of the run reuses it (``onnxruntime/calibrate.py``). So TFLite
calibrates on the first image only, each of its tensors is matched to the ONNX tensor holding the
same values, and the ONNX ranges over all images are written into the calibrated model, which
TFLiteConverter's own quantizer then quantizes.

Matching: a TFLite tensor's name holds the Keras layers fused into its op; the ONNX writer
starts every node's name with its layer's. The candidates are the ONNX tensors of those layers
(all of them when none of those matches), and the one whose first-image min and max equal the
TFLite tensor's (within float rounding of two runtimes) is taken. The numbers decide because
TFLite's calibrator does not always record the tensor its name says: an op that works in place
(a residual ADD writing into its input's buffer) is logged after it ran, so the input's recorded
range is the sum's. Matching what TFLite recorded keeps its own quantization. A tensor with no such match, or
with matches whose ranges differ, stops the sharing: TFLite then calibrates on all images itself,
and the manifest says why. Nothing is assumed about the mapping that the numbers do not confirm.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ...errors import ConversionFailed
from ...model_io import _all_layers
from ..onnxruntime.histograms import PERCENTILE
from .ops import _references

RTOL, ATOL = 1e-3, 1e-4  # two float runtimes' first-image min/max agree to this


def onnxruntime_ranges(src, exports, calib, label: str, record: dict, method: str = "minmax", percentile: float = PERCENTILE):
    """A ``ranges(first)`` for ``calibrate.every_core``, with ONNX Runtime's calibration done now
    (or reused from an earlier target of the run), or None (``record["why"]`` says why) when ONNX
    Runtime cannot serve: not installed, or no Keras model the ONNX writer covers. ``method``:
    how the injected ranges are computed (ONNX Runtime's min-max, entropy or percentile
    calibrator, percentile ours at level ``percentile``); the tensors are matched on min-max ranges
    whatever the method."""
    from ... import onnx_export

    record.update(ranges="tflite", method="minmax")
    if importlib.util.find_spec("onnxruntime") is None or src.keras_model is None:
        record["why"] = "ONNX Runtime or the Keras model is not available"
        return None
    if onnx_export.unsupported_layers(src.keras_model):
        record["why"] = "the ONNX writer does not cover the model"
        return None

    from ..onnxruntime.calibrate import calibration_cache, load_first, load_ranges
    from ..onnxruntime.convert import OPSET, preprocessed

    path = exports.onnx(OPSET, tf2onnx=False)  # tf2onnx's export would cost GBs: not for this
    if path is None or not exports.onnx_exporter.get(OPSET, "").startswith(onnx_export.TOOL):
        record["why"] = "the ONNX writer could not export the model"
        return None
    # the matching needs min-max on the first image: a by-product of the min-max and percentile
    # passes; for entropy (ONNX Runtime's own calibrator) a one-image min-max pass beside it
    try:
        if method == "entropy":
            cache, _ = calibration_cache(preprocessed(path), calib.take(1), "minmax", f"{label}: first image (ONNX Runtime)")
            onnx_first = load_ranges(cache)
        what = "ranges" if method == "minmax" else f"ranges ({method})"
        cache, reused = calibration_cache(preprocessed(path), calib, method, f"{label}: {what} (ONNX Runtime)", percentile)
        if method != "entropy":
            onnx_first = load_first(cache)
    except ConversionFailed as exc:
        record["why"] = str(exc)
        return None
    full = load_ranges(cache)  # over every image, by ``method``

    def ranges(first: bytearray) -> bytes | None:
        """``first`` (TFLite's calibration on the first image) with every range over all images,
        or None (``record["why"]``) when some tensor has no match."""
        matched = match(first, src.keras_model, onnx_first, full)
        if isinstance(matched, str):
            record["why"] = matched
            return None
        worst = inject(first, {t: full[name] for t, (name, _) in matched.items()})
        diffs = [d for _, d in matched.values()]
        record.update(ranges="onnxruntime", method=method, tensors=len(matched), reused=reused, why=None)
        if method == "percentile":
            record["percentile"] = percentile
        record["max_first_image_diff"] = float(max(diffs, default=0.0))
        record["max_range_change_vs_first_image"] = worst
        return bytes(first)

    return ranges


def tensor_ranges(model: bytes | bytearray) -> dict[int, tuple[str, float, float]]:
    """{tensor index: (name, min, max)} of subgraph 0's calibrated tensors."""
    from tensorflow.lite.python import schema_py_generated as schema

    sg = schema.Model.GetRootAs(model, 0).Subgraphs(0)
    out = {}
    for t in range(sg.TensorsLength()):
        tensor = sg.Tensors(t)
        q = tensor.Quantization()
        if q is not None and q.MinLength() == 1 and q.MaxLength() == 1:
            out[t] = (tensor.Name().decode(), float(q.Min(0)), float(q.Max(0)))
    return out


def match(first: bytes | bytearray, keras_model, onnx_first: dict, full: dict) -> dict[int, tuple[str, float]] | str:
    """{TFLite tensor: (its ONNX tensor, first-image |Δ|)}, or why there is none for some tensor."""
    layers = {layer.name: layer for layer in _all_layers(keras_model) if not hasattr(layer, "layers")}
    by_layer: dict[str, list[str]] = {}
    for name in onnx_first:
        by_layer.setdefault(name.split("/")[0], []).append(name)
    out = {}
    for index, (name, lo, hi) in tensor_ranges(first).items():
        refs = _references(name, layers, keras_model.name)
        named = [o for layer in refs for o in by_layer.get(layer, ())]
        found = _closest(lo, hi, named, onnx_first, full) or _closest(lo, hi, list(onnx_first), onnx_first, full)
        if not found:
            return f"no ONNX Runtime tensor has the first-image range of TFLite tensor {name!r} ({lo:.6g}..{hi:.6g})"
        if len(found) > 1:
            return f"TFLite tensor {name!r} matches {len(found)} ONNX Runtime tensors ({', '.join(found[:3])})"
        out[index] = (found[0], _diff(lo, hi, *onnx_first[found[0]]))
    return out


def _diff(lo: float, hi: float, olo: float, ohi: float) -> float:
    return max(abs(lo - olo), abs(hi - ohi))


def _closest(lo: float, hi: float, names: list[str], onnx_first: dict, full: dict) -> list[str]:
    """The candidates whose first-image range equals (lo, hi) within rounding, nearest first;
    candidates with the same ranges, on the first image and on all, are one answer (a tensor and
    its reshape). Of two answers, one ten times nearer than the other is the answer: a residual
    Add's output and its larger input can agree to 1e-4 on the first image."""
    tol = ATOL + RTOL * max(abs(lo), abs(hi))
    hits = sorted(
        (n for n in names if n in full and _diff(lo, hi, *onnx_first[n]) <= tol), key=lambda n: _diff(lo, hi, *onnx_first[n])
    )
    distinct: list[str] = []
    for n in hits:
        if not any(_diff(*full[n], *full[d]) <= tol for d in distinct):
            distinct.append(n)
    if len(distinct) > 1:
        best, second = (_diff(lo, hi, *onnx_first[n]) for n in distinct[:2])
        if second > 10 * best + 1e-6 * max(abs(lo), abs(hi), 1e-6):
            return distinct[:1]
    return distinct


def inject(model: bytearray, ranges: dict[int, tuple[float, float]]) -> float:
    """Write ``ranges`` (tensor index -> (min, max)) into the calibrated ``model`` in place;
    returns the largest widening over the first image's range (relative), for the record."""
    from tensorflow.lite.python import schema_py_generated as schema

    sg = schema.Model.GetRootAs(model, 0).Subgraphs(0)
    widest = 0.0
    for index, (lo, hi) in ranges.items():
        q = sg.Tensors(index).Quantization()
        mins, maxs = q.MinAsNumpy(), q.MaxAsNumpy()  # views into ``model``
        span = max(float(maxs[0] - mins[0]), 1e-12)
        widest = max(widest, (float(mins[0]) - lo) / span, (hi - float(maxs[0])) / span)
        mins[0], maxs[0] = np.float32(lo), np.float32(hi)
    return round(widest, 4)
