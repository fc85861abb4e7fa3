"""End-to-end conversion with TensorFlow's converter and LiteRT's interpreter, on a small
trained Xception-family model."""

import numpy as np
import pytest
from click.testing import CliRunner

from xception_edge.artifact import read_manifest
from xception_edge.cli import cli
from xception_edge.backends.litert.convert import op_summary
from xception_edge.preprocess import PreprocessSpec, load_images, list_images
from xception_edge.runtime import open_artifact


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def converted(converted_all):
    """Every built-in target of the small model, from the suite's one shared conversion."""
    return converted_all


def test_every_litert_target_is_written_and_verified(converted):
    out, results, _ = converted
    by = {r["target"]: r for r in results["results"]}
    assert set(by) >= {"arm64-litert-int8", "arm64-litert-fp16", "litert-dynamic-int8", "litert-fp32"}
    for name, r in by.items():
        assert r["error"] is None
        v = r["verification"]
        assert v["passed"] and v["images"] == 30, name
        assert v["agreement"] >= 0.9, (name, v)
    assert by["litert-fp32"]["verification"]["max_abs_diff"] < 1e-4
    sizes = {n: by[n]["size_bytes"] for n in by}
    assert sizes["arm64-litert-int8"] < 0.6 * sizes["litert-fp32"]  # tiny model: graph overhead; full-size is ~0.26
    assert sizes["arm64-litert-fp16"] < 0.7 * sizes["litert-fp32"]


def test_int8_artifact_is_integer_only_with_a_complete_manifest(converted):
    out, _, (model, train, val) = converted
    art = out / "arm64-litert-int8"
    names = ["calibration.txt", "labels.txt", "manifest.json", "model.tflite", "transforms.npz"]  # CLE's scales
    assert sorted(p.name for p in art.iterdir()) == names
    m = read_manifest(art)
    assert m.precision == "int8" and m.conversion["all_ops_integer"] is True
    ops = op_summary(art / "model.tflite")
    assert ops["all_integer"] and "DEPTHWISE_CONV_2D" in ops["counts"] and "ADD" in ops["counts"]
    assert m.input.dtype == "int8" and m.output.dtype == "int8"
    # the check can fail: the dynamic-range artifact computes in float
    dyn = op_summary(out / "litert-dynamic-int8" / "model.tflite")
    assert not dyn["all_integer"] and any(not o["integer"] for o in dyn["ops"])
    assert m.input.scale > 0 and list(m.input.shape) == [1, 71, 71, 3]
    assert m.preprocessing.height == 71 and m.preprocessing.scaling == "xception"
    assert list(m.labels) == ["a", "b", "c"] and (art / "labels.txt").read_text().split() == ["a", "b", "c"]
    assert m.calibration["count"] == 60 and m.calibration["classes"] == 3
    assert len([l for l in (art / "calibration.txt").read_text().splitlines() if not l.startswith("#")]) == 60
    from xception_edge.calibration import sha256_file

    assert m.source_sha256 == sha256_file(model)
    assert set(m.files) == {"calibration.txt", "labels.txt", "model.tflite", "transforms.npz"}
    assert m.transforms["applied"] == ["cle"] and m.model_bytes == m.files["model.tflite"]["bytes"]
    assert "tensorflow" in m.tools and m.verification.passed
    assert "avx2" in m.int8_flags or m.host["machine"] != "x86_64"


def test_runtime_agrees_with_keras_on_held_out_images(converted):
    import keras

    out, _, (model_path, train, val) = converted
    files = list_images(val)
    x, _ = load_images(files, PreprocessSpec(71, 71))
    y = np.array([("a", "b", "c").index(f.parent.name) for f in files])
    ref = keras.models.load_model(model_path).predict(x, verbose=0)
    assert (ref.argmax(-1) == y).mean() >= 0.9  # the small model really learned the task
    for target in ("litert-fp32", "arm64-litert-int8"):
        rt = open_artifact(out / target)
        probs = rt.predict(x)
        assert probs.shape == (30, 3) and probs.dtype == np.float32
        assert (probs.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
        assert abs(probs.sum(-1).mean() - 1.0) < 0.05
    fp32 = open_artifact(out / "litert-fp32").predict(x)
    np.testing.assert_allclose(fp32, ref, atol=1e-4)


def test_existing_artifact_needs_force(converted, tmp_path):
    import shutil

    shared, _, (model, train, val) = converted
    out = tmp_path / "out"  # a copy: the run locks its --out, and the shared folder stays untouched
    shutil.copytree(shared / "litert-fp32", out / "litert-fp32")
    before = (out / "litert-fp32" / "manifest.json").read_bytes()
    r = CliRunner().invoke(
        cli, ["convert", "--model", str(model), "--target", "litert-fp32", "--calibration", str(train), "--out", str(out)]
    )
    assert r.exit_code == 2 and "--force" in r.output
    assert (out / "litert-fp32" / "manifest.json").read_bytes() == before


def test_collapsed_int8_is_caught_and_not_written(small_model, tmp_path):
    """One blank calibration image: the int8 ranges are wrong; verification must refuse it."""
    from PIL import Image

    model, train, val = small_model
    cal = tmp_path / "blank"
    cal.mkdir()
    for i in range(10):
        Image.new("RGB", (71, 71), (0, 0, 0)).save(cal / f"black{i}.png")
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            "--model",
            str(model),
            "--target",
            "arm64-litert-int8",
            "--calibration",
            str(cal),
            "--verify-data",
            str(val),
            "--labels",
            str(_labels(tmp_path)),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert r.exit_code == 1, r.output
    assert "arm64-litert-int8" in r.output and "below the floor" in r.output
    assert not (tmp_path / "out" / "arm64-litert-int8").exists()
    assert not (tmp_path / "out").exists()  # a run that wrote nothing leaves no --out behind


def _labels(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("a\nb\nc\n")
    return p


def test_per_tensor_and_uint8_profile_from_a_user_toml(small_model, tmp_path):
    model, train, val = small_model
    toml = tmp_path / "pi-uint8.toml"
    toml.write_text(
        'name = "pi-uint8"\nbackend = "litert"\nformat = "tflite"\nprecision = "int8"\n'
        'input_dtype = "uint8"\noutput_dtype = "float32"\nper_channel = false\ncalibration_size = 30\n'
    )
    r = run("convert", "--model", model, "--target", toml, "--calibration", train, "--verify-data", val, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    m = read_manifest(tmp_path / "o" / "pi-uint8")
    assert m.input.dtype == "uint8" and m.output.dtype == "float32"
    assert m.calibration["count"] == 30


def test_keras_applications_xception_to_int8(tmp_path, image_folder):
    """`--model keras:xception` (stock architecture, random weights offline) to full-integer int8."""
    r = run(
        "convert",
        "--model",
        "keras:xception",
        "--weights",
        "none",
        "--input-size",
        71,
        "--num-classes",
        3,
        "--target",
        "arm64-litert-int8",
        "--calibration",
        image_folder,
        "--num-calibration",
        24,
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 0, r.output
    m = read_manifest(tmp_path / "o" / "arm64-litert-int8")
    assert m.source_model["kind"] == "keras-applications" and m.conversion["all_ops_integer"]
    assert m.conversion["op_counts"]["DEPTHWISE_CONV_2D"] >= 30  # the real 36-layer Xception
    assert m.verification.images == 12  # 36 images, 24 used for calibration, 12 held back


def test_h5_and_saved_model_inputs(small_model, small_saved_model, tmp_path):
    import keras

    model_path, train, val = small_model
    keras.models.load_model(model_path).save(tmp_path / "m.h5")
    for spec, kind in ((tmp_path / "m.h5", "h5"), (small_saved_model, "saved_model")):
        out = tmp_path / f"out-{kind}"
        r = run(
            "convert",
            "--model",
            spec,
            "--target",
            "litert-fp32",
            "--target",
            "arm64-litert-int8",
            "--calibration",
            train,
            "--num-calibration",
            30,
            "--verify-data",
            val,
            "--out",
            out,
        )
        assert r.exit_code == 0, (kind, r.output)
        m = read_manifest(out / "arm64-litert-int8")
        assert m.source_model["kind"] == kind and m.verification.agreement >= 0.9
        # a SavedModel has no Keras layers for the profile's CLE: converted without it, with a warning
        assert (m.transforms is None) == (kind == "saved_model")
        assert ("convert without their profiles' transforms" in r.output) == (kind == "saved_model")
        assert read_manifest(out / "litert-fp32").verification.max_abs_diff < 1e-4


def test_console_script_keeps_tensorflow_noise_out(small_model, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    model, train, val = small_model
    exe = Path(sys.executable).with_name("xception-edge")
    r = subprocess.run(
        [
            str(exe),
            "convert",
            "--model",
            str(model),
            "--target",
            "litert-fp32",
            "--calibration",
            str(train),
            "--verify-data",
            str(val),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for noise in ("I0000", "WARNING: All log messages", "oneDNN", "cuda", "absl"):
        assert noise not in r.stderr, noise
    assert "[litert-fp32] verify: top-1 agreement" in r.stderr  # our own lines still show
    assert "litert-fp32" in r.stdout  # the table


def test_calibration_make_command(image_folder, tmp_path):
    out = tmp_path / "cal.txt"
    r = run("calibration", "make", "--from", image_folder, "--num", 9, "--seed", 1, "--out", out)
    assert r.exit_code == 0 and "9 images" in r.output
    again = tmp_path / "again.txt"
    run("calibration", "make", "--from", image_folder, "--num", 9, "--seed", 1, "--out", again)
    assert out.read_text() == again.read_text()
    r = CliRunner().invoke(cli, ["calibration", "make", "--from", str(image_folder), "--num", "0", "--out", str(out)])
    assert r.exit_code == 2 and "at least 1" in r.output
