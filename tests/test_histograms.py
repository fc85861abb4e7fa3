"""Percentile ranges by our one-pass collector (backends/onnxruntime/histograms.py): exact bin
merging, numpy's percentile within a bin, no failure on degenerate tensors, and ONNX Runtime's
own PercentileCalibrater's ranges on a real model within two of its bins."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xception_edge.backends.onnxruntime.histograms import BINS, PERCENTILE, RangeCollector


def _collect(arrays, name="t") -> RangeCollector:
    c = RangeCollector()
    for a in arrays:
        c.add_image({name: a})
    return c


@settings(max_examples=40, deadline=None)
@given(
    scales=st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_histogram_does_not_depend_on_image_order(scales, seed):
    """Growing R merges bins exactly: any order of the same images gives the same histogram."""
    rng = np.random.default_rng(seed)
    arrays = [(rng.standard_normal(500) * s).astype(np.float32) for s in scales]
    forward, backward = _collect(arrays), _collect(arrays[::-1])
    a, b = forward.tensors["t"], backward.tensors["t"]
    assert a.radius == b.radius
    np.testing.assert_array_equal(a.hist, b.hist)
    assert a.hist.sum() == sum(x.size for x in arrays)
    assert forward.percentile() == backward.percentile()
    assert forward.first()["t"] == (float(arrays[0].min()), float(arrays[0].max()))
    assert backward.first()["t"] == (float(arrays[-1].min()), float(arrays[-1].max()))


@pytest.mark.parametrize("percentile", [PERCENTILE, 99.9, 99.0])
def test_percentile_is_numpys_within_one_bin(percentile):
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.standard_t(3, 200_000), 0).astype(np.float32)  # heavy tail, half zeros
    signed = (rng.standard_normal(200_000) * 2 - 0.5).astype(np.float32)
    for x in (relu, signed):
        c = _collect(np.array_split(x, 7))
        lo, hi = c.percentile(percentile)["t"]
        t = float(np.percentile(np.abs(x), percentile))
        width = c.tensors["t"].radius / BINS
        assert t <= max(-lo, hi) <= t + width + 1e-6, (percentile, lo, hi, t, width)
        assert lo >= x.min() and hi <= x.max()  # clipped to the tensor's own range
        assert c.minmax()["t"] == (float(x.min()), float(x.max()))
    assert lo < 0 < hi
    assert c.percentile(100.0)["t"] == c.minmax()["t"]


def test_degenerate_tensors_give_a_range_not_an_error():
    """Where ONNX Runtime's collector stops ("Too many bins for data range"), ours gives a range."""
    near_constant = np.full(1000, 1e6, np.float32) + np.arange(1000, dtype=np.float32) * 1e-3
    with pytest.raises(ValueError, match="Too many bins"):
        np.histogram(np.abs(near_constant), bins=2048)  # what ONNX Runtime does with it
    c = RangeCollector()
    c.add_image({"const": near_constant, "zeros": np.zeros(50, np.float32), "nan": np.array([np.nan, 1.0, -2.0], np.float32)})
    c.add_image({"const": near_constant, "zeros": np.zeros(50, np.float32), "nan": np.array([3.0, np.inf], np.float32)})
    tiny = np.array([1e-38, -3e-39, 0.0], np.float32)  # R = 2^-126: 4096 / R overflows float32
    c.add("tiny", tiny)
    ranges = c.percentile()
    assert ranges["tiny"] == (float(tiny.min()), float(tiny.max()))
    radius = c.tensors["tiny"].radius
    assert radius == 2.0**-126
    bins = [int(np.floor(float(v) / radius * BINS)) + BINS for v in tiny]  # in float64: 7580, 3050, 4096
    assert np.nonzero(c.tensors["tiny"].hist)[0].tolist() == sorted(bins) and c.tensors["tiny"].hist.sum() == 3
    lo, hi = ranges["const"]
    assert lo == float(near_constant.min()) and hi == float(near_constant.max())
    assert ranges["zeros"] == (0.0, 0.0)
    assert c.minmax()["nan"] == (-2.0, 3.0)  # NaN and inf skipped, as ONNX Runtime's nanmin/nanmax do
    with pytest.raises(ValueError, match="no finite value"):
        c.add("bad", np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="not in"):
        c.percentile(0.0)


def test_large_tensors_are_sampled_from_turning_offsets():
    """A tensor above SAMPLE values per image histograms every k-th value from an offset that
    turns per image: over k images every value is seen once, as the whole tensor would be."""
    from xception_edge.backends.onnxruntime import histograms

    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal(3 * histograms.SAMPLE)).astype(np.float32)
    x[0] = 10.0  # the largest value, at offset 0: min and max always see it
    sampled = _collect([x, x, x])
    whole = RangeCollector()
    for part in (x[0::3], x[1::3], x[2::3]):
        whole.add("t", part)
    np.testing.assert_array_equal(sampled.tensors["t"].hist, whole.tensors["t"].hist * 3)
    assert sampled.minmax()["t"] == (float(x.min()), 10.0)


def test_ranges_match_onnx_runtimes_percentile_calibrator(small_model, tmp_path):
    """Our percentile ranges on the small model's ONNX export are ONNX Runtime's own, to within
    two of its bins (it takes a bin's lower edge, over bins from the first batch's min |x|)."""
    import os

    import keras
    import onnxruntime.quantization as oq

    from xception_edge.backends.onnxruntime import calibrate
    from xception_edge.backends.onnxruntime.convert import preprocessed
    from xception_edge.calibration import build_calibration, open_source
    from xception_edge.onnx_export import export
    from xception_edge.preprocess import PreprocessSpec

    model_path, train, _ = small_model
    export(keras.models.load_model(model_path), tmp_path / "model.onnx")
    pre = preprocessed(tmp_path / "model.onnx")
    calib = build_calibration(open_source(train), PreprocessSpec(height=71, width=71), 16, seed=0)

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.it = calib.batches()

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {calibrate._input_name(pre): batch}

    ort = oq.create_calibrator(
        pre,
        calibrate._op_types(),
        augmented_model_path=os.path.join(tmp_path, "aug.onnx"),
        calibrate_method=oq.CalibrationMethod.Percentile,
    )
    ort.collect_data(Reader())
    theirs = {k: calibrate._pair(t.range_value) for k, t in ort.compute_data().data.items()}

    class Task:
        def advance(self, n=1):
            pass

    data, first = calibrate._percentile(pre, calib, Task())
    ours = {k: calibrate._pair(t.range_value) for k, t in data.data.items()}
    assert set(ours) == set(theirs) and len(ours) > 20
    minmax = calibrate.load_ranges(calibrate.cache_paths(pre, calib, "minmax")[0])
    clipped = 0
    for name, (lo, hi) in ours.items():
        width = max(-minmax[name][0], minmax[name][1]) / 2048
        assert abs(lo - theirs[name][0]) <= 2 * width + 1e-6 and abs(hi - theirs[name][1]) <= 2 * width + 1e-6, name
        clipped += hi < minmax[name][1] - 2 * width
    assert clipped >= 5  # the ranges really are percentiles, not min-max again
    assert first == calibrate.load_first(calibrate.cache_paths(pre, calib, "minmax")[0])
