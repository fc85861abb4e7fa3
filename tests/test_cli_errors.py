"""Bad input: one line on stderr naming the file/value and the fix, exit code 2, nothing written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_images
from xception_edge.cli import cli


def invoke(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    return r


def error_line(r) -> str:
    lines = [l for l in r.output.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, r.output
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("models")
    inp = keras.Input((71, 71, 3))
    x = keras.layers.Lambda(lambda t: t * 2)(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(d / "lambda.keras")
    inp = keras.Input((32,))
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(inp)).save(d / "vector.keras")
    inp = keras.Input((64, 64, 3))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    keras.Model(inp, out).save(d / "small_input.keras")
    inp = keras.Input((None, None, 3))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    keras.Model(inp, out).save(d / "dynamic.keras")
    (d / "garbage.keras").write_bytes(b"not a zip")
    (d / "model.pt").write_bytes(b"torch")
    return d


@pytest.mark.parametrize(
    "name,needle",
    [
        ("missing.keras", "does not exist"),
        ("garbage.keras", "is not a .keras archive"),
        ("model.pt", "unknown extension '.pt'"),
        ("vector.keras", "is not an image"),
        ("small_input.keras", "below 71x71"),
        ("dynamic.keras", "is not fixed"),
        ("lambda.keras", "--unsafe-model"),
    ],
)
def test_bad_models(models, image_folder, tmp_path, name, needle):
    r = invoke(
        "convert", "--model", models / name, "--target", "litert-fp32", "--calibration", image_folder, "--out", tmp_path / "o"
    )
    assert r.exit_code == 2
    assert needle in error_line(r)
    assert not any((tmp_path / "o").iterdir()) if (tmp_path / "o").exists() else True


def test_unsafe_model_flag_loads_the_lambda_model(models, image_folder, tmp_path):
    r = invoke(
        "convert",
        "--model",
        models / "lambda.keras",
        "--unsafe-model",
        "--target",
        "litert-fp32",
        "--calibration",
        image_folder,
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 0, r.output
    assert "does not look like an Xception" in r.output  # converts, with a warning
    assert (tmp_path / "o" / "litert-fp32" / "model.tflite").is_file()


def test_bad_options_before_any_model_is_loaded(image_folder, tmp_path):
    cases = [
        (["--target", "arm64-litert-int9"], "did you mean: arm64-litert-int8"),
        (["--target", "arm64-litert-int8", "--num-calibration", "0", "--calibration", image_folder], "at least 1"),
        (["--target", "arm64-litert-int8", "--num-calibration", "-5", "--calibration", image_folder], "at least 1"),
        (["--target", "arm64-litert-int8"], "need calibration images"),
        (["--target", "arm64-litert-int8", "--calibration", tmp_path / "nope"], "does not exist"),
        (["--target", "litert-fp32"], "--no-verify"),
    ]
    for extra, needle in cases:
        r = invoke("convert", "--model", "keras:xception", "--weights", "none", "--out", tmp_path / "o", *extra)
        assert r.exit_code == 2, (extra, r.output)
        assert needle in error_line(r), extra
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nbackend = "litert"\nformat = "tflite"\nprecision = "int8"\ncalib_size = 3\n')
    r = invoke("convert", "--model", "keras:xception", "--target", bad, "--calibration", image_folder, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "unknown key 'calib_size'" in error_line(r) and "bad.toml" in error_line(r)


def test_empty_and_undecodable_calibration_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    r = invoke(
        "convert",
        "--model",
        "keras:xception",
        "--weights",
        "none",
        "--target",
        "arm64-litert-int8",
        "--calibration",
        tmp_path / "empty",
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 2 and "holds no images" in error_line(r)
    junk = tmp_path / "junk"
    write_images(junk, classes=("x",), per_class=3)
    for i in range(12):
        (junk / "x" / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated" if i % 2 else b"")
    r = invoke(
        "convert",
        "--model",
        "keras:xception",
        "--weights",
        "none",
        "--input-size",
        "71",
        "--num-classes",
        "3",
        "--target",
        "arm64-litert-int8",
        "--calibration",
        junk,
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 2 and "only 3 image(s)" in error_line(r)
    assert "broken" in r.output  # the skipped files are listed in a warning
    assert not (tmp_path / "o" / "arm64-litert-int8").exists()


def test_list_file_naming_missing_files_or_escaping_its_root(image_folder, tmp_path):
    lst = tmp_path / "cal.txt"
    lst.write_text("a/a_000.png\na/gone.png\n")
    r = invoke(
        "convert",
        "--model",
        "keras:xception",
        "--target",
        "arm64-litert-int8",
        "--calibration",
        lst,
        "--calibration-root",
        image_folder,
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 2 and "gone.png" in error_line(r)
    lst.write_text("../../etc/passwd\n")
    r = invoke(
        "convert",
        "--model",
        "keras:xception",
        "--target",
        "arm64-litert-int8",
        "--calibration",
        lst,
        "--calibration-root",
        image_folder,
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 2 and "outside the list's root" in error_line(r)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered by the file-as-folder case")
def test_unwritable_out_permission(image_folder, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = invoke(
        "convert", "--model", "keras:xception", "--target", "litert-fp32", "--calibration", image_folder, "--out", ro / "x"
    )
    assert r.exit_code == 2 and "not writable" in error_line(r)


def test_unwritable_out(image_folder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    r = invoke(
        "convert", "--model", "keras:xception", "--target", "litert-fp32", "--calibration", image_folder, "--out", blocker / "sub"
    )
    assert r.exit_code == 2 and "not writable" in error_line(r)
    r = invoke(
        "convert", "--model", "keras:xception", "--target", "litert-fp32", "--calibration", image_folder, "--out", "/proc/xe"
    )
    assert r.exit_code == 2 and "not writable" in error_line(r)


def test_labels_count_must_match(small_model, tmp_path):
    model, train, val = small_model
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    r = invoke(
        "convert",
        "--model",
        model,
        "--target",
        "litert-fp32",
        "--calibration",
        train,
        "--labels",
        labels,
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 2 and "has 2 classes but the model outputs 3" in error_line(r)
    four = write_images(tmp_path / "four", classes=("a", "b", "c", "d"), per_class=3)
    r = invoke("convert", "--model", model, "--target", "litert-fp32", "--calibration", four, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "4 class folders" in error_line(r) and "--labels" in error_line(r)


def test_real_entry_point_prints_one_line_and_exit_2(tmp_path):
    """The console script itself: no traceback, one line, exit code 2, no TensorFlow noise."""
    exe = Path(sys.executable).with_name("xception-edge")
    r = subprocess.run(
        [
            str(exe),
            "convert",
            "--model",
            str(tmp_path / "nope.keras"),
            "--target",
            "litert-fp32",
            "--no-verify",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:") and "nope.keras" in r.stderr


def test_cli_imports_no_heavy_framework():
    code = (
        "import sys, xception_edge.cli, xception_edge.runtime, xception_edge.backends.litert.runtime, xception_edge.preprocess; "
        "print(' '.join(m for m in ('tensorflow','keras','openvino','onnxruntime','nncf','tf2onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
