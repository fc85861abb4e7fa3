"""Calibrate once (#13): LiteRT int8 takes its activation ranges from ONNX Runtime's min-max
calibration of the run's ONNX export, checked tensor by tensor on the first image; where it
calibrates itself, it does so with one process per core and the same result."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from xception_edge.artifact import read_manifest


def _interp(model_bytes):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=bytes(model_bytes))


def _scales(model_bytes) -> dict[str, float]:
    """{tensor name: scale} of an int8 model's activation tensors (per-tensor quantized)."""
    out = {}
    for t in _interp(model_bytes).get_tensor_details():
        q = t["quantization_parameters"]
        if t["dtype"] == np.int8 and len(q["scales"]) == 1 and len(q["zero_points"]) == 1:
            out[t["name"]] = float(q["scales"][0])
    return out


@pytest.fixture(scope="module")
def small(small_model):
    """The small model's source, and a calibration set of 24 of its training images."""
    from xception_edge.calibration import build_calibration, open_source
    from xception_edge.model_io import load_source
    from xception_edge.preprocess import PreprocessSpec

    model_path, train, _ = small_model
    calib = build_calibration(open_source(train), PreprocessSpec(height=71, width=71), 24, seed=0)
    return load_source(str(model_path)), calib


def _converter(saved_model, images):
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([images[i : i + 1]] for i in range(len(images)))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = c.inference_output_type = tf.int8
    return c


def test_parallel_tflite_calibration_gives_the_same_bytes(small, small_saved_model):
    from xception_edge.backends.litert.calibrate import every_core

    images = small[1].images
    plain = _converter(small_saved_model, images).convert()
    seen = []
    with every_core(images, lambda n=1: seen.append(n), workers=3):
        shared = _converter(small_saved_model, images).convert()
    assert shared == plain
    assert sum(seen) == len(images) and len(seen) == len(images)  # one line per image, workers' too


def test_a_failing_calibration_worker_is_a_one_line_error(small, small_saved_model, tmp_path, monkeypatch):
    from xception_edge.backends.litert import calibrate
    from xception_edge.errors import ConversionFailed

    images = small[1].images
    broken = tmp_path / "worker.py"
    broken.write_text("import sys\nsys.exit('the calibration wrapper could not be loaded')\n")
    monkeypatch.setattr(calibrate, "WORKER", broken)
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("xception-edge-calibration-*"))
    with pytest.raises(ConversionFailed, match="calibration worker failed .exit 1.: the calibration wrapper could not"):
        with calibrate.every_core(images, workers=2):
            _converter(small_saved_model, images).convert()
    assert set(temp.glob("xception-edge-calibration-*")) == before  # its temporary folder is gone


def test_onnxruntime_ranges_give_tflites_own_scales(small, small_saved_model, tmp_path):
    """The int8 model from ONNX Runtime's ranges has TFLite's own activation scales (the same
    min/max over the same images, up to float rounding of two runtimes)."""
    from xception_edge.backends.litert.calibrate import every_core
    from xception_edge.backends.litert.shared_ranges import onnxruntime_ranges
    from xception_edge.exports import Exports

    src, calib = small
    record: dict = {}
    ranges = onnxruntime_ranges(src, Exports(src, tmp_path / "work"), calib, "t", record)
    with every_core(calib.images, ranges=ranges, workers=1):
        shared = _converter(small_saved_model, calib.images).convert()
    own = _converter(small_saved_model, calib.images).convert()
    assert record["ranges"] == "onnxruntime" and record["tensors"] > 20, record
    a, b = _scales(shared), _scales(own)
    assert a.keys() == b.keys() and len(a) > 20
    worst = max(abs(a[k] - b[k]) / b[k] for k in a)
    assert worst < 1e-3, worst
    assert shared != own  # the ranges really came from elsewhere


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_another_calibration_method_gives_litert_that_methods_ranges(method, small, small_saved_model, tmp_path):
    """calibration_method = percentile | entropy on LiteRT: the tensors are matched on min-max, and
    ONNX Runtime's ranges of that method are written in; they are narrower than min-max (the
    point of both methods), so every activation scale shrinks or stays, and many shrink."""
    from xception_edge.backends.litert.calibrate import every_core
    from xception_edge.backends.litert.shared_ranges import onnxruntime_ranges
    from xception_edge.exports import Exports

    src, calib = small
    scales = {}
    for m in ("minmax", method):
        record: dict = {}
        ranges = onnxruntime_ranges(src, Exports(src, tmp_path / "work"), calib, "t", record, m)
        with every_core(calib.images, ranges=ranges, workers=1):
            scales[m] = _scales(_converter(small_saved_model, calib.images).convert())
        assert record["ranges"] == "onnxruntime" and record["method"] == m and record["tensors"] > 20, record
        assert record.get("percentile") == (99.999 if m == "percentile" else None)  # ONNX Runtime's default level
    a, b = scales[method], scales["minmax"]
    assert a.keys() == b.keys()
    assert all(a[k] <= b[k] * (1 + 1e-6) for k in a)
    assert sum(a[k] < b[k] * 0.99 for k in a) >= len(a) // 4, {k: a[k] / b[k] for k in a}


def test_a_mismatched_tensor_stops_the_sharing(small, small_saved_model, tmp_path):
    """A TFLite tensor whose first-image range no ONNX tensor has: no ranges are shared."""
    from xception_edge.backends.litert.shared_ranges import match, tensor_ranges

    src, calib = small
    first = _first_image_calibration(small_saved_model, calib.images)
    found = tensor_ranges(first)
    fake = {f"onnx{i}": (lo, hi) for i, (_, lo, hi) in found.items()}
    matched = match(first, src.keras_model, fake, fake)
    assert isinstance(matched, dict) and len(matched) == len(found)
    index, (name, lo, hi) = next(iter(found.items()))
    fake[f"onnx{index}"] = (lo, hi * 1.1 + 0.1)
    why = match(first, src.keras_model, fake, fake)
    assert isinstance(why, str) and name in why and "no ONNX Runtime tensor" in why


def _first_image_calibration(saved_model, images) -> bytearray:
    c = _converter(saved_model, images[:1])
    c._experimental_calibrate_only = True
    return bytearray(c.convert())


def test_converted_litert_int8_records_where_its_ranges_came_from(converted_all):
    out, _, _ = converted_all
    m = read_manifest(out / "arm64-litert-int8")
    cal = m.conversion["calibration"]
    assert cal["ranges"] == "onnxruntime" and cal["method"] == "percentile" and cal["percentile"] == 99.99, cal
    assert cal["tensors"] > 20 and cal["max_first_image_diff"] < 1e-3
    json.dumps(cal)


def test_a_saved_model_input_calibrates_with_tflite_and_says_why(small_model, small_saved_model, tmp_path):
    """No Keras layers, so no ONNX writer export to share ranges from: TFLite calibrates itself."""
    from click.testing import CliRunner

    from xception_edge.cli import cli

    _, train, val = small_model
    out = tmp_path / "out"
    profile = tmp_path / "entropy.toml"  # the built-in profile, with entropy ranges (ONNX Runtime's)
    builtin = (Path(__file__).parents[1] / "targets" / "arm64-litert-int8.toml").read_text()
    profile.write_text(
        builtin.replace('calibration_method = "percentile"\ncalibration_percentile = 99.99', 'calibration_method = "entropy"', 1)
    )
    args = ["convert", "--model", small_saved_model, "--target", profile, "--calibration", train]
    args += ["--num-calibration", "16", "--verify-data", val, "--labels", tmp_path / "labels.txt", "--out", out]
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    cal = read_manifest(out / "arm64-litert-int8").conversion["calibration"]
    assert cal["ranges"] == "tflite" and "Keras model is not available" in cal["why"], cal
    # entropy ranges come from ONNX Runtime: not here, and the run says so
    assert (cal["method"], cal["method_asked"]) == ("minmax", "entropy"), cal
    assert "calibration_method = 'entropy' takes ONNX Runtime's ranges" in r.output


def test_layers_kept_in_float_take_the_shared_ranges_too(small_model, tmp_path):
    """ignored_scope (and so every --max-drop attempt that keeps layers in float): TFLite's
    QuantizationDebugger calibrates through the same call, so it takes the shared percentile
    ranges as the all-int8 conversion does, with no warning."""
    from click.testing import CliRunner

    from xception_edge.cli import cli

    model, train, val = small_model
    profile = tmp_path / "keep-head.toml"
    builtin = (Path(__file__).parents[1] / "targets" / "arm64-litert-int8.toml").read_text()
    profile.write_text(
        builtin.replace('name = "arm64-litert-int8"', 'name = "keep-head"').replace(
            "ignored_scope = []", 'ignored_scope = ["predictions"]'
        )
    )
    args = ["convert", "--model", model, "--target", profile, "--target", "arm64-litert-int8", "--calibration", train]
    args += ["--num-calibration", "16", "--verify-data", val, "--out", tmp_path / "out"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "could not use" not in r.output
    kept, plain = (read_manifest(tmp_path / "out" / n).conversion for n in ("keep-head", "arm64-litert-int8"))
    assert kept["float_layers"] == ["predictions"] and "float_layers" not in plain
    for cal in (kept["calibration"], plain["calibration"]):
        assert (cal["ranges"], cal["method"], cal["percentile"]) == ("onnxruntime", "percentile", 99.99), cal
    assert sorted([kept["calibration"]["reused"], plain["calibration"]["reused"]]) == [False, True]  # one pass for both
    assert kept["calibration"]["tensors"] == plain["calibration"]["tensors"]
