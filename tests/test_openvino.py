"""End-to-end conversion to OpenVINO IR (fp32, fp16, NNCF int8) with the real OpenVINO and
NNCF, on a small trained Xception-family model."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from xception_edge.artifact import read_manifest
from xception_edge.cli import cli
from xception_edge.errors import BackendUnavailable, BadInput
from xception_edge.preprocess import PreprocessSpec, list_images, load_images
from xception_edge.runtime import open_artifact

OV_TARGETS = ("openvino-fp32", "intel-gpu-openvino-fp16", "x86-openvino-int8")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def converted(converted_all):
    """The OpenVINO targets of the suite's one shared conversion of the small model."""
    out, payload, small = converted_all
    return out, {"results": [x for x in payload["results"] if x["target"] in OV_TARGETS]}, small


def _ir(path):
    import openvino as ov

    return ov.Core().read_model(str(path / "model.xml"))


def _bin_bytes(folder):
    return (folder / "model.bin").stat().st_size


def test_every_openvino_target_is_written_and_verified(converted):
    out, results, _ = converted
    by = {r["target"]: r for r in results["results"]}
    assert set(by) == set(OV_TARGETS)
    for name, r in by.items():
        assert r["error"] is None and r["backend"] == "openvino"
        v = r["verification"]
        assert v["passed"] and v["images"] == 30, name
        assert v["agreement"] >= 0.9, (name, v)
        files = sorted(p.name for p in (out / name).iterdir())
        assert {"model.bin", "model.xml"} <= set(files) and not [
            f for f in files if f.startswith("model.") and f[6:] not in ("bin", "xml")
        ]
        assert ("transforms.npz" in files) == (name == "x86-openvino-int8")  # its profile's CLE
    assert by["openvino-fp32"]["verification"]["max_abs_diff"] < 1e-4
    assert by["intel-gpu-openvino-fp16"]["verification"]["max_abs_diff"] < 1e-2
    fp32 = _bin_bytes(out / "openvino-fp32")
    assert _bin_bytes(out / "intel-gpu-openvino-fp16") < 0.55 * fp32
    assert _bin_bytes(out / "x86-openvino-int8") < 0.7 * fp32  # tiny model: FakeQuantize ranges weigh; demo model ~0.28


def test_int8_ir_has_fake_quantize_and_int8_weights(converted):
    out, _, _ = converted
    m = read_manifest(out / "x86-openvino-int8")
    ir = _ir(out / "x86-openvino-int8")
    kinds = [op.get_type_name() for op in ir.get_ops()]
    assert kinds.count("FakeQuantize") == m.conversion["fake_quantize_ops"] > 10
    weighted = [op for op in ir.get_ops() if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")]
    int8_weights = [op for op in weighted if _weight_type(op) == "i8"]
    assert len(int8_weights) == len(weighted) > 10  # every conv, depthwise conv and the classifier
    assert m.conversion["weights_by_type"] == {"i8": len(weighted)}
    assert read_manifest(out / "openvino-fp32").conversion["weights_by_type"] == {"f32": len(weighted)}
    assert read_manifest(out / "intel-gpu-openvino-fp16").conversion["weights_by_type"] == {"f16": len(weighted)}
    # the check can fail: the fp32 and fp16 IRs have no FakeQuantize and float weights
    for name, wtype in (("openvino-fp32", "f32"), ("intel-gpu-openvino-fp16", "f16")):
        ops = list(_ir(out / name).get_ops())
        assert not any(op.get_type_name() == "FakeQuantize" for op in ops)
        assert {_weight_type(op) for op in ops if op.get_type_name() in ("Convolution", "GroupConvolution")} == {wtype}


def _weight_type(op):
    """Element type of the constant behind a weighted op's weights (through Convert/Multiply/Subtract)."""
    node = op.input_value(1).get_node()
    while node.get_type_name() in ("Convert", "Multiply", "Subtract", "FakeQuantize"):
        node = node.input_value(0).get_node()
    return node.get_output_element_type(0).get_type_name() if node.get_type_name() == "Constant" else None


def test_weighted_ops_carry_keras_layer_names(converted):
    import keras

    out, _, (model_path, _, _) = converted
    names = {op.get_friendly_name() for op in _ir(out / "openvino-fp32").get_ops()}
    km = keras.models.load_model(model_path)
    expected = set()
    for layer in km.layers:
        kind = layer.__class__.__name__
        if kind == "SeparableConv2D":
            expected |= {f"{layer.name}/depthwise", f"{layer.name}/pointwise"}
        elif kind in ("Conv2D", "Dense", "DepthwiseConv2D"):
            expected.add(layer.name)
    assert len(expected) > 10 and expected <= names
    assert read_manifest(out / "openvino-fp32").conversion["keras_layers_named"] == len(
        [l for l in km.layers if l.__class__.__name__ in ("Conv2D", "Dense", "DepthwiseConv2D", "SeparableConv2D")]
    )


def test_runtime_agrees_with_keras_on_held_out_images(converted):
    import keras

    out, _, (model_path, train, val) = converted
    files = list_images(val)
    x, _ = load_images(files, PreprocessSpec(71, 71))
    y = np.array([("a", "b", "c").index(f.parent.name) for f in files])
    ref = keras.models.load_model(model_path).predict(x, verbose=0)
    assert (ref.argmax(-1) == y).mean() >= 0.9  # the small model really learned the task
    probs = {}
    for target in OV_TARGETS:
        rt = open_artifact(out / target)
        assert rt.backend == "openvino" and rt.device == "CPU"
        assert rt.config["INFERENCE_PRECISION_HINT"] == "f32" and rt.inference_precision == "f32"
        assert rt.config["INFERENCE_NUM_THREADS"] == rt.threads == min(2, os.cpu_count())  # the profile's threads = 2
        assert rt.config["PERFORMANCE_HINT"] == "LATENCY"
        probs[target] = rt.predict(x)
        assert probs[target].shape == (30, 3) and probs[target].dtype == np.float32
        assert (probs[target].argmax(-1) == ref.argmax(-1)).mean() >= 0.9, target
        assert abs(probs[target].sum(-1).mean() - 1.0) < 1e-3
    np.testing.assert_allclose(probs["openvino-fp32"], ref, atol=1e-4)  # an NCHW/NHWC mix-up fails here
    np.testing.assert_allclose(probs["intel-gpu-openvino-fp16"], ref, atol=1e-2)
    assert np.abs(probs["x86-openvino-int8"] - ref).max() > 1e-5  # int8 really computes differently


def test_manifest_io_and_tools(converted):
    out, _, _ = converted
    for target in OV_TARGETS:
        m = read_manifest(out / target)
        assert m.backend == "openvino" and m.format == "openvino-ir" and m.model_file == "model.xml"
        assert list(m.input.shape) == [1, 71, 71, 3] and m.input.dtype == "float32"
        assert list(m.output.shape) == [1, 3] and m.output.dtype == "float32"
        assert m.input.scale == 0.0
        assert {"model.xml", "model.bin", "labels.txt"} <= set(m.files)
        assert m.tools["openvino"].startswith("20") and m.conversion["cpu_inference_precision"] == "f32"
    m = read_manifest(out / "x86-openvino-int8")
    assert "nncf" in m.tools and m.calibration["count"] == 60
    assert m.conversion["nncf"] == {
        "preset": "performance",
        "subset_size": 60,
        "fast_bias_correction": True,
        "disable_bias_correction": True,
        "activations_range": "minmax",
        "overflow_fix": "enable",
        "per_channel_weights": True,
        "ignored_scope": [],
    }


@pytest.mark.parametrize("damage", ["delete", "modify"])
def test_missing_or_modified_bin_is_refused(converted, tmp_path, damage):
    out, _, _ = converted
    art = tmp_path / "art"
    shutil.copytree(out / "openvino-fp32", art)
    open_artifact(art)  # intact copy opens
    weights = art / "model.bin"
    if damage == "delete":
        weights.unlink()
    else:
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    with pytest.raises(BadInput) as exc:
        open_artifact(art)
    assert exc.value.exit_code == 2 and "model.bin" in str(exc.value)


def _profile(tmp_path, name, ignored, quantization=""):
    toml = tmp_path / f"{name}.toml"
    toml.write_text(
        f'name = "{name}"\nbackend = "openvino"\nformat = "openvino-ir"\nprecision = "int8"\n'
        f"calibration_size = 30\n[quantization]\nignored_scope = {json.dumps(ignored)}\n{quantization}"
    )
    return toml


@pytest.mark.parametrize("value", ["0", "2.5", "true"])
def test_bad_subset_size_is_refused(tmp_path, value):
    from xception_edge.targets import load_profile

    with pytest.raises(BadInput, match="subset_size"):
        load_profile(_profile(tmp_path, "p", [], f"subset_size = {value}\n"))


@pytest.mark.parametrize(
    "top, message",
    [('precision = "dynamic-int8"', "not dynamic-int8"), ('input_dtype = "int8"', "keep float32 input and output")],
)
def test_openvino_profile_without_an_ir_equivalent_is_refused(tmp_path, top, message):
    from xception_edge.targets import load_profile

    toml = tmp_path / "p.toml"
    toml.write_text(
        f'name = "p"\nbackend = "openvino"\nformat = "openvino-ir"\n{top}\n'
        + ('precision = "int8"\n' if "precision" not in top else "")
    )
    with pytest.raises(BadInput, match=message):
        load_profile(toml)


def test_bad_ignored_scope_name_is_a_one_line_error(small_model, tmp_path):
    model, train, val = small_model
    toml = _profile(tmp_path, "ov-ignore-typo", ["block2_sepconv9"])
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            "--model",
            str(model),
            "--target",
            str(toml),
            "--calibration",
            str(train),
            "--verify-data",
            str(val),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert r.exit_code == 2, r.output
    assert "block2_sepconv9" in r.output and "block2_sepconv1" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out" / "ov-ignore-typo").exists()


def test_ignored_scope_entries_resolve_to_op_names(small_model, tmp_path):
    """Keras layers map to their ops, OpenVINO op names pass through, a weightless layer is refused."""
    from xception_edge.backends.openvino.convert import name_keras_layers, resolve_ignored_scope, source_model
    from xception_edge.exports import Exports
    from xception_edge.model_io import load_source
    from xception_edge.targets import load_profile

    src = load_source(str(small_model[0]))
    exports = Exports(src, tmp_path)
    model = source_model(exports).clone()
    layer_ops = name_keras_layers(model, src.keras_model)
    assert layer_ops["block2_sepconv2"] == ["block2_sepconv2/depthwise", "block2_sepconv2/pointwise"]
    softmax = next(op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Softmax")
    profile = load_profile(_profile(tmp_path, "p", ["block2_sepconv2", softmax, "block2_sepconv2/pointwise"]))
    assert resolve_ignored_scope(profile, model, layer_ops, src) == [
        "block2_sepconv2/depthwise",
        "block2_sepconv2/pointwise",
        softmax,
    ]
    with pytest.raises(
        BadInput,
        match=r"'block2_add' is a Keras Add layer, which has no weights.*block2_sepconv1, block2_sepconv2, block2_residual",
    ):
        resolve_ignored_scope(load_profile(_profile(tmp_path, "q", ["block2_add"])), model, layer_ops, src)
    assert source_model(exports) is source_model(exports)  # converted once per run, shared by every target


def test_ignored_scope_keeps_named_keras_layers_in_float(small_model, tmp_path):
    model, train, val = small_model
    toml = _profile(
        tmp_path, "ov-ignore", ["block1_conv1", "block2_sepconv1", "predictions"], 'preset = "mixed"\nsubset_size = 20\n'
    )
    r = run(
        "convert", "--model", model, "--target", toml, "--calibration", train, "--verify-data", val, "--out", tmp_path / "out"
    )
    assert r.exit_code == 0, r.output
    art = tmp_path / "out" / "ov-ignore"
    m = read_manifest(art)
    assert m.conversion["nncf"]["preset"] == "mixed" and m.conversion["nncf"]["subset_size"] == 20
    assert m.calibration["count"] == 30
    assert m.conversion["nncf"]["ignored_scope"] == [
        "block1_conv1",
        "block2_sepconv1/depthwise",
        "block2_sepconv1/pointwise",
        "predictions",
    ]
    types = {
        op.get_friendly_name(): _weight_type(op)
        for op in _ir(art).get_ops()
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
    }
    assert types["block1_conv1"] == types["predictions"] == types["block2_sepconv1/pointwise"] == "f32"
    assert types["block1_conv2"] == types["block2_sepconv2/pointwise"] == "i8"


def test_collapsed_int8_is_caught_and_not_written(small_model, tmp_path):
    """Ten blank calibration images: NNCF's activation ranges are wrong; verification must refuse it."""
    model, train, val = small_model
    cal = tmp_path / "blank"
    cal.mkdir()
    for i in range(10):
        Image.new("RGB", (71, 71), (0, 0, 0)).save(cal / f"black{i}.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            "--model",
            str(model),
            "--target",
            "openvino-fp32",
            "--target",
            "x86-openvino-int8",
            "--calibration",
            str(cal),
            "--verify-data",
            str(val),
            "--labels",
            str(labels),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert r.exit_code == 1, r.output
    assert "x86-openvino-int8: top-1 agreement" in r.output and "below the floor" in r.output
    assert not (tmp_path / "out" / "x86-openvino-int8").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["openvino-fp32"]  # the good target still written


def test_missing_openvino_names_the_extra(converted, monkeypatch):
    out, _, _ = converted
    installed = sys.modules["openvino"]
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailable) as exc:
        open_artifact(out / "openvino-fp32")
    assert exc.value.exit_code == 2 and "pip install 'xception-edge[openvino]'" in str(exc.value)
    monkeypatch.setitem(sys.modules, "openvino", installed)
    monkeypatch.setitem(sys.modules, "nncf", None)
    from xception_edge.backends.openvino import frameworks

    with pytest.raises(BackendUnavailable, match=r"nncf is not installed.*xception-edge\[convert\]"):
        frameworks.nncf()


def test_missing_openvino_stops_a_conversion_with_exit_2(small_model, tmp_path, monkeypatch):
    model, train, val = small_model
    monkeypatch.setitem(sys.modules, "openvino", None)
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            "--model",
            str(model),
            "--target",
            "openvino-fp32",
            "--calibration",
            str(train),
            "--verify-data",
            str(val),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert r.exit_code == 2, r.output
    assert "openvino is not installed" in r.output and "xception-edge[openvino]" in r.output
    assert not (tmp_path / "out").exists()  # a run that wrote nothing leaves no --out behind
