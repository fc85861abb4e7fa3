"""Pre-quantization transforms (xception_edge.transforms): cross-layer equalization keeps the float
model's outputs, flattens a planted outlier channel, and repairs int8 on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import images, load, probs

from xception_edge.errors import BadInput
from xception_edge.transforms import apply

INT8 = ["arm64-litert-int8", "x86-openvino-int8", "x86-onnxruntime-int8"]


def depthwise_ranges(model, layer_name, x):
    """Per-channel max |depthwise output| of a SeparableConv2D, computed from the layer's input."""
    import keras
    import tensorflow as tf

    layer = model.get_layer(layer_name)
    inputs = np.asarray(keras.Model(model.inputs, layer.input)(x, training=False))
    out = tf.nn.depthwise_conv2d(inputs, layer.depthwise_kernel, strides=(1, 1, 1, 1), padding="SAME").numpy()
    return np.abs(out).max(axis=(0, 1, 2))


@pytest.fixture(scope="module")
def cle_outlier(outlier_model):
    """The outlier model, its CLE'd copy and the record (calibration: 32 training images)."""
    path, train, val = outlier_model
    model = load(path)
    new, records = apply(model, ["cle"], images(train)[:32], verify_images=images(val))
    return model, new, records[0]


@pytest.mark.parametrize("which", ["small_model", "outlier_model"])
def test_cle_keeps_float_outputs_and_the_input_model(which, request):
    path, train, val = request.getfixturevalue(which)
    model, x_val = load(path), images(val)
    before = [w.copy() for w in model.get_weights()]
    ref = probs(model, x_val)
    new, records = apply(model, ["cle"], images(train)[:32], verify_images=x_val)
    assert new is not model
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # input untouched
    assert np.abs(probs(model, x_val) - ref).max() == 0
    assert np.abs(probs(new, x_val) - ref).max() <= 1e-4
    (record,) = records
    assert record["name"] == "cle" and record["max_abs_dp"] <= 1e-4
    assert record["params"]["alphas"] == [0.5, 0.75, 1.0]
    json.dumps(record)  # a record is JSON-able as it is
    kinds = {(e["layer"], e["kind"]) for e in record["layers"]}
    assert ("block3_sepconv1", "separable") in kinds and ("block5_sepconv1", "bn_relu") in kinds
    assert ("block1_conv2", "bn_relu") not in kinds  # block1_conv2_act feeds block2's residual too
    assert ("block5_sepconv3", "bn_relu") not in kinds  # its BN feeds block5_add
    for e in record["layers"]:
        assert e["sqnr_db_after"] >= e["sqnr_db_before"], e  # no scaling is a candidate: never worse
    changed = [a for a, b in zip(before, new.get_weights()) if not np.array_equal(a, b)]
    assert changed  # the copy was equalized


def test_cle_flattens_the_outlier_channel(cle_outlier, outlier_model):
    model, new, record = cle_outlier
    x = images(outlier_model[1])[:16]
    old_r, new_r = depthwise_ranges(model, "block3_sepconv1", x), depthwise_ranges(new, "block3_sepconv1", x)
    old_ratio, new_ratio = old_r.max() / np.median(old_r), new_r.max() / np.median(new_r)
    assert old_ratio > 300 and new_ratio < 5 and old_ratio / new_ratio > 100, (old_ratio, new_ratio)
    (entry,) = [e for e in record["layers"] if e["layer"] == "block3_sepconv1" and e["kind"] == "separable"]
    assert entry["max_over_median_before"] > 300 and entry["max_over_median_after"] < 5
    assert entry["range_ratio_before"] / entry["range_ratio_after"] > 100
    assert entry["sqnr_db_before"] < 10 < 30 < entry["sqnr_db_after"], entry  # int8 noise swamps it, then does not
    assert entry["alpha"] in ("weight", 0.5, 0.75, 1.0)


def test_data_free_cle_without_calibration(small_model):
    path, _, val = small_model
    model, x_val = load(path), images(val)
    new, (record,) = apply(model, ["cle"], None, verify_images=x_val)
    assert record["max_abs_dp"] <= 1e-4
    assert np.abs(probs(new, x_val) - probs(model, x_val)).max() <= 1e-4
    assert {e["alpha"] for e in record["layers"]} == {"weight"}
    assert all(e["sqnr_db_before"] is None for e in record["layers"])


def test_cle_repairs_int8_on_every_backend(outlier_model, tmp_path):
    """The outlier model's int8 collapses on every backend (verification refuses it, nothing is
    written); converted with `transforms=["cle"]` (convert's --transform cle), every target
    verifies with high top-1 agreement and no layer in float, and its manifest records CLE."""
    import xception_edge as xe

    path, train, val = outlier_model
    common = {"calibration": train, "verify_data": val, "num_calibration": 40}
    plain = xe.convert(path, INT8, out=tmp_path / "plain", transforms=[], **common)
    for r in plain:
        assert not r.ok and f"{r.target}: top-1 agreement" in r.error, (r.target, r.error)
        assert not (tmp_path / "plain" / r.target).exists()
    results = xe.convert(path, [*INT8, "litert-fp32"], out=tmp_path / "cle", transforms=["cle"], **common)
    assert [r.target for r in results] == [*INT8, "litert-fp32"]
    for r in results:
        assert r.ok, r.error
        assert r.verification["agreement"] >= 0.9, (r.target, r.verification)
        manifest = json.loads((tmp_path / "cle" / r.target / "manifest.json").read_text())
        assert manifest["verification"]["agreement"] >= 0.9 and manifest["verification"]["images"] == 30
        if r.target == "litert-fp32":  # --transform applies to the quantized targets only
            assert "transforms" not in manifest and manifest["profile"]["quantization"]["transforms"] == []
            continue
        assert not r.float_layers and manifest["profile"]["quantization"]["ignored_scope"] == []
        assert manifest["profile"]["quantization"]["transforms"] == ["cle"]
        table = manifest["transforms"]
        assert table["applied"] == ["cle"] and table["records"][0]["max_abs_dp"] <= 1e-4
        outlier = next(x for x in table["records"][0]["layers"] if x["layer"] == "block3_sepconv1" and x["kind"] == "separable")
        assert outlier["max_over_median_before"] > 300 and outlier["max_over_median_after"] < 5
        assert "transforms.npz" in manifest["files"] and table["scales_file"] == "transforms.npz"
    # inspect compares the artifact with the model it was converted from: the outlier model with
    # the recorded CLE scales re-applied (against the plain model, the equalized layers' tensors
    # would differ by their per-channel scales and read as broken)
    result = xe.inspect(tmp_path / "cle" / "arm64-litert-int8", path, train, report=tmp_path / "inspect", num_images=8)
    by = {e["layer"]: e for e in result["artifacts"][0]["layers"] if e["layer"]}
    assert by["block3_sepconv1/depthwise"]["sqnr_db"] > 20, by["block3_sepconv1/depthwise"]
    # and it shows, per layer, the int8 error proxy without and with CLE (the outlier layer first)
    shown = result["artifacts"][0]["transforms"]
    assert shown[0]["layer"] == "block3_sepconv1" and shown[0]["sqnr_db_after"] - shown[0]["sqnr_db_before"] > 20
    md = (tmp_path / "inspect" / "inspect.md").read_text()
    assert "per-layer int8 error proxy without and with them" in md and "| cle | block3_sepconv1 | separable |" in md


def tiny_conv_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def test_a_model_without_separable_convolutions_is_returned_unchanged(capsys):
    model = tiny_conv_model()
    x = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    new, (record,) = apply(model, ["cle"], x, verify_images=x)
    assert "no SeparableConv2D layer" in capsys.readouterr().err
    assert record["name"] == "cle" and record["layers"] == [] and record["skipped"] == "no SeparableConv2D layer"
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), new.get_weights()))
    assert np.array_equal(probs(model, x), probs(new, x))


def test_unknown_transform_or_option_is_a_one_line_bad_input():
    model = tiny_conv_model()
    x = np.zeros((2, 16, 16, 3), np.float32)
    with pytest.raises(BadInput) as exc:
        apply(model, ["cle", "smooth"], x, verify_images=x)
    msg = str(exc.value)
    assert "\n" not in msg and "'smooth'" in msg and "known transforms: cle" in msg
    with pytest.raises(BadInput, match="unknown option.*alpha.*known options"):
        apply(model, ["cle"], x, verify_images=x, params={"cle": {"alpha": 0.5}})
    with pytest.raises(BadInput, match="alphas"):
        apply(model, ["cle"], x, verify_images=x, params={"cle": {"alphas": [2.0]}})


def test_depth_multiplier_and_bn_relu_chains_stay_exact():
    """Depth multiplier 2 on both sides of a SeparableConv2D -> BN -> ReLU -> SeparableConv2D chain,
    with non-trivial BN statistics and an outlier channel planted in the first depthwise kernel."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 3))
    x = layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, use_bias=False, name="sep1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Activation("relu", name="act1")(x)
    x = layers.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, use_bias=False, name="sep2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn1")
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(0, 0.5, 6), rng.normal(0, 0.5, 6), rng.uniform(0.5, 3, 6)])
    dw, pw = model.get_layer("sep1").get_weights()
    dw[:, :, 1, 0] *= 200.0  # channel k = 1*2 + 0 = 2 of the depthwise output
    pw[:, :, 2, :] /= 200.0
    model.get_layer("sep1").set_weights([dw, pw])
    x = rng.uniform(-1, 1, (16, 12, 12, 3)).astype(np.float32)
    new, (record,) = apply(model, ["cle"], x, verify_images=x)
    assert np.abs(probs(new, x) - probs(model, x)).max() <= 1e-4
    by_kind = {(e["layer"], e["kind"]): e for e in record["layers"]}
    assert set(by_kind) == {("sep1", "bn_relu"), ("sep1", "separable"), ("sep2", "separable")}
    assert by_kind[("sep1", "bn_relu")]["next"] == "sep2"
    sep1 = by_kind[("sep1", "separable")]
    assert sep1["max_over_median_before"] > 50 > 5 > sep1["max_over_median_after"]
    assert sep1["sqnr_db_after"] > sep1["sqnr_db_before"] + 10


@pytest.mark.parametrize(
    "args, words",
    [
        (["--transform", "smooth"], "--transform: unknown transform 'smooth'; known transforms: cle"),
        (["--transform", "none", "--transform", "cle"], "--transform none turns every transform off"),
        (["--transform", "cle", "--transform", "cle"], "a transform is listed twice"),
        (["--transform", "adaround", "--transform", "cle"], "adaround puts the weights on the target's grid and must come last"),
    ],
)
def test_bad_transform_on_the_command_line_is_exit_2(small_model, tmp_path, args, words):
    from click.testing import CliRunner

    from xception_edge.cli import cli

    path, train, _ = small_model
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            "--model",
            str(path),
            "--target",
            "arm64-litert-int8",
            "--calibration",
            str(train),
            "--out",
            str(tmp_path / "o"),
            *args,
        ],
    )
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_unknown_transform_in_a_profile_and_a_savedmodel_source_are_exit_2(small_model, small_saved_model, tmp_path):
    from click.testing import CliRunner

    from xception_edge.cli import cli

    path, train, _ = small_model
    toml = tmp_path / "mine.toml"
    builtin = (Path(__file__).parents[1] / "targets" / "arm64-litert-int8.toml").read_text()
    toml.write_text(builtin.replace('transforms = ["cle"]', 'transforms = ["cle", "adaround9"]', 1))
    assert "adaround9" in toml.read_text()
    base = ["convert", "--calibration", str(train), "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(cli, [*base, "--model", str(path), "--target", str(toml)])
    assert r.exit_code == 2 and "[quantization] transforms: unknown transform 'adaround9'" in r.output, r.output
    r = CliRunner().invoke(cli, [*base, "--model", str(small_saved_model), "--target", "arm64-litert-int8", "--transform", "cle"])
    assert r.exit_code == 2 and "is a SavedModel" in r.output and "--transform none" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_profile_transform_options_reach_the_conversion_and_its_manifest(small_model, tmp_path):
    """[quantization.transform_options.cle] changes what CLE does, and the manifest records it."""
    from click.testing import CliRunner

    from xception_edge.artifact import read_manifest
    from xception_edge.cli import cli

    path, train, _ = small_model
    toml = tmp_path / "mine.toml"
    builtin = (Path(__file__).parents[1] / "targets" / "arm64-litert-int8.toml").read_text()
    toml.write_text(builtin.replace("\n[verify]", "\n[quantization.transform_options.cle]\nalphas = [0.5]\n\n[verify]", 1))
    out = tmp_path / "o"
    r = CliRunner().invoke(
        cli, ["convert", "--model", str(path), "--target", str(toml), "--calibration", str(train), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    m = read_manifest(out / "arm64-litert-int8")
    assert m.transforms["params"]["cle"] == {"alphas": [0.5]}
    assert m.transforms["records"][0]["params"]["alphas"] == [0.5]
    assert m.profile["quantization"]["transform_options"] == {"cle": {"alphas": [0.5]}}
