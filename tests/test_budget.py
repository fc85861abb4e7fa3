"""`convert --max-drop PP --validation DIR`: accuracy-aware conversion keeps the most harmful
layers in float until the top-1 drop is within budget; bad input is refused with exit 2."""

import json

import pytest
from click.testing import CliRunner

from xception_edge.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_max_drop_needs_validation(tmp_path, image_folder):
    r = run(
        "convert",
        "--model",
        tmp_path / "m.keras",
        "--target",
        "x86-openvino-int8",
        "--calibration",
        image_folder,
        "--out",
        tmp_path / "out",
        "--max-drop",
        "1",
    )
    assert r.exit_code == 2 and "--max-drop 1 needs --validation" in r.output
    r = run(
        "convert",
        "--model",
        tmp_path / "m.keras",
        "--target",
        "x86-openvino-int8",
        "--calibration",
        image_folder,
        "--out",
        tmp_path / "out",
        "--validation",
        image_folder,
    )
    assert r.exit_code == 2 and "only used with --max-drop" in r.output
    r = run(
        "convert",
        "--model",
        tmp_path / "m.keras",
        "--target",
        "x86-openvino-int8",
        "--calibration",
        image_folder,
        "--out",
        tmp_path / "out",
        "--max-drop",
        "-1",
        "--validation",
        image_folder,
    )
    assert r.exit_code == 2 and "non-negative" in r.output
    r = run(
        "convert",
        "--model",
        tmp_path / "m.keras",
        "--target",
        "x86-openvino-int8",
        "--calibration",
        image_folder,
        "--out",
        tmp_path / "out",
        "--max-drop",
        "1",
        "--validation",
        tmp_path / "nowhere",
    )
    assert r.exit_code == 2 and "nowhere does not exist" in r.output
    assert not (tmp_path / "out" / "x86-openvino-int8").exists()


def test_validation_overlapping_calibration_warns_or_fails_with_strict(small_model, tmp_path):
    model, train, _ = small_model
    args = [
        "convert",
        "--model",
        model,
        "--target",
        "x86-onnxruntime-int8",
        "--calibration",
        train,
        "--num-calibration",
        "16",
        "--out",
        tmp_path / "out",
        "--max-drop",
        "100",
        "--validation",
        train,
    ]
    r = run(*args, "--strict")
    assert r.exit_code == 2, r.output
    assert "16 of 120 --validation images are also calibration images" in r.output and "--strict" in r.output
    assert not (tmp_path / "out" / "x86-onnxruntime-int8").exists()
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    assert "also calibration images" in r.stderr
    assert "under 3 images' worth" not in r.stderr  # 100 pp is a coarse budget
    manifest = json.loads((tmp_path / "out" / "x86-onnxruntime-int8" / "manifest.json").read_text())
    budget = manifest["accuracy_budget"]
    assert budget["max_drop_pp"] == 100 and budget["float_layers"] == [] and budget["validation_images"] == 120
    assert len(budget["attempts"]) == 1


INT8 = ["x86-openvino-int8", "x86-onnxruntime-int8", "arm64-litert-int8"]
NO_CLE = ["--transform", "none"]  # the outlier model's collapse is what these tests need


@pytest.fixture(scope="module")
def plain_outlier_run(outlier_model, tmp_path_factory):
    """The outlier model converted without a budget to every int8 backend, in one run (without
    the profiles' CLE, which alone repairs this model: tests/test_transforms.py)."""
    model, train, _ = outlier_model
    out = tmp_path_factory.mktemp("plain") / "out"
    targets = [a for t in INT8 for a in ("--target", t)]
    return (
        run("convert", "--model", model, *targets, "--calibration", train, "--num-calibration", "32", *NO_CLE, "--out", out),
        out,
    )


@pytest.mark.parametrize("target", INT8)
def test_max_drop_repairs_an_outlier_channel(outlier_model, plain_outlier_run, tmp_path, target):
    model, train, val = outlier_model
    base = ["convert", "--model", model, "--target", target, "--calibration", train, "--num-calibration", "32", *NO_CLE]
    # Plain int8 collapses: verification catches it, exit 1, the target named, nothing written.
    r, plain = plain_outlier_run
    assert r.exit_code == 1, r.output
    assert f"{target}: top-1 agreement" in r.output
    assert not (plain / target).exists()
    # With a budget, the layer with the outlier stays float and the artifact is within budget.
    r = run(*base, "--out", tmp_path / "fixed", "--max-drop", "5", "--validation", val, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    assert "block3_sepconv1" in res["float_layers"]
    assert 0 < res["float_mac_share"] <= 0.2
    assert res["drop_pp"] <= 5
    manifest = json.loads((tmp_path / "fixed" / target / "manifest.json").read_text())
    budget = manifest["accuracy_budget"]
    assert budget["attempts"][0]["drop_pp"] > 5 and budget["attempts"][0]["float_layers"] == []
    assert "--max-drop 5 pp is under 3 images' worth of the 30 --validation images" in r.stderr  # 1 image = 3.33 pp
    assert budget["float_layers"] == res["float_layers"]
    if target == "x86-openvino-int8":  # NNCF's own accuracy control made the artifact
        assert budget["method"] == "nncf.quantize_with_accuracy_control"
        assert "block3_sepconv1" in manifest["conversion"]["nncf"]["accuracy_control"]["float_layers"]
    else:  # the layers kept float by name: converting with this profile again reproduces the artifact
        assert "block3_sepconv1" in manifest["profile"]["quantization"]["ignored_scope"]
    assert manifest["verification"]["agreement"] >= 0.9


def test_unreachable_budget_fails_with_the_best_drop(outlier_model, tmp_path):
    model, train, val = outlier_model
    profile = tmp_path / "tight.toml"
    src = (__import__("xception_edge.targets", fromlist=["builtin_dir"]).builtin_dir() / "x86-onnxruntime-int8.toml").read_text()
    profile.write_text(
        src.replace('name = "x86-onnxruntime-int8"', 'name = "tight-ort"').replace(
            "max_float_mac_share = 0.2", "max_float_mac_share = 0.001"
        )
    )
    r = run(
        "convert",
        "--model",
        model,
        "--target",
        profile,
        "--calibration",
        train,
        "--num-calibration",
        "32",
        *NO_CLE,
        "--out",
        tmp_path / "out",
        "--max-drop",
        "5",
        "--validation",
        val,
    )
    assert r.exit_code == 1, r.output
    assert "tight-ort: top-1 drop stays above the budget of 5 pp" in r.output and "best" in r.output
    assert "max_float_mac_share 0.001" in r.output
    assert not (tmp_path / "out" / "tight-ort").exists()


def test_budget_applies_to_float_targets_without_repair(small_model, tmp_path):
    """fp32 targets are measured too (0 pp here) and recorded; nothing to keep in float."""
    model, train, val = small_model
    r = run(
        "convert",
        "--model",
        model,
        "--target",
        "litert-fp32",
        "--calibration",
        train,
        "--out",
        tmp_path / "out",
        "--max-drop",
        "10",
        "--validation",
        val,
        "--json",
    )
    assert r.exit_code == 0, r.output
    budget = json.loads((tmp_path / "out" / "litert-fp32" / "manifest.json").read_text())["accuracy_budget"]
    assert budget["drop_pp"] == 0 and budget["float_layers"] == [] and len(budget["attempts"]) == 1
