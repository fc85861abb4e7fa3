"""Per-layer quantization error of LiteRT artifacts (TFLite QuantizationDebugger + every
intermediate tensor of the artifact), and selective quantization (ignored_scope kept in float),
on the small trained Xception-family model."""

import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from xception_edge.artifact import read_manifest
from xception_edge.cli import cli
from xception_edge.backends.litert.convert import interpreter, op_layers, op_summary
from xception_edge.inspection.base import SQNR_CAP_DB, finish
from xception_edge.inspection.context import open_context
from xception_edge.backends.litert.inspect import measure
from xception_edge.pipeline import ConvertRequest, run_convert

KEEP = "block3_sepconv1"


def _profile(tmp_path, name: str, scope: str):
    """targets/arm64-litert-int8.toml under another name, with an ignored_scope."""
    from xception_edge.targets import builtin_dir

    text = (builtin_dir() / "arm64-litert-int8.toml").read_text()
    text = text.replace('name = "arm64-litert-int8"', f'name = "{name}"').replace(
        "ignored_scope = []", f"ignored_scope = [{scope}]"
    )
    assert f'name = "{name}"' in text and "ignored_scope = [" + scope in text
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def artifacts(converted_all, tmp_path_factory):
    """arm64-litert-int8 of the suite's one conversion (60 calibration images), and that profile
    with KEEP in float, converted here: both in one folder."""
    shared, _, small_model = converted_all
    model, train, val = small_model
    tmp = tmp_path_factory.mktemp("inspect-tflite")
    keep = _profile(tmp, "pi-keep-b3", f'"{KEEP}"')
    res = run_convert(
        ConvertRequest(
            model=str(model),
            targets=(str(keep),),
            out=tmp / "art",
            calibration=train,
            num_calibration=16,
            verify_data=val,
        )
    )
    assert [r.error for r in res] == [None]
    shutil.copytree(shared / "arm64-litert-int8", tmp / "art" / "arm64-litert-int8")
    return tmp / "art", small_model, tmp


@pytest.fixture(scope="module")
def measured(artifacts):
    art, (model, train, _), tmp = artifacts
    ctx = open_context(art / "arm64-litert-int8", str(model), train, tmp / "work", num_images=12)
    return ctx, finish(measure(ctx), ctx.parts)


def test_every_weighted_layer_is_matched_with_sane_sqnr(measured):
    ctx, errors = measured
    weighted = [p.name for p in ctx.parts.values() if p.weighted]
    by_layer = {}
    for e in errors:
        if e.layer:
            by_layer.setdefault(e.layer, []).append(e)
    assert len(weighted) >= 30 and not [w for w in weighted if w not in by_layer]  # no silent gaps
    assert all(len(by_layer[w]) == 1 for w in weighted)  # each part is one op
    adds = [p.name for p in ctx.parts.values() if p.kind == "residual-add"]
    assert len(adds) == 5 and all(len(by_layer.get(a, [])) == 1 and by_layer[a][0].node.startswith("ADD") for a in adds)
    assert {
        by_layer["block4_sepconv1/depthwise"][0].node.split()[0],
        by_layer["block4_sepconv1/pointwise"][0].node.split()[0],
    } == {"DEPTHWISE_CONV_2D", "CONV_2D"}
    assert by_layer["predictions"][0].node.startswith("FULLY_CONNECTED")
    w = [by_layer[n][0] for n in weighted]
    assert all(math.isfinite(e.sqnr_db) and math.isfinite(e.input_sqnr_db) for e in errors)
    assert sum(5 < e.sqnr_db < 60 for e in w) >= 0.9 * len(w), [(e.layer, e.sqnr_db) for e in w]
    assert all(e.own_sqnr_db is not None and 10 < e.own_sqnr_db < SQNR_CAP_DB for e in w), [(e.layer, e.own_sqnr_db) for e in w]
    # an op alone loses less than the whole int8 network up to it
    assert np.median([e.own_sqnr_db for e in w]) > np.median([e.sqnr_db for e in w]) + 3
    assert errors == sorted(errors, key=lambda e: (e.sqnr_db, e.order)) and errors[0].kind != "other"


def test_error_accumulates_along_the_network(measured):
    ctx, errors = measured
    by = {e.layer: e for e in errors if e.layer}
    first, second = by["block1_conv1"], by["block1_conv2"]
    # the int8 input is measured as the artifact gets it: 8 bits over [-1, 1] are ~48 dB, not exact
    assert 40 < first.input_sqnr_db < 55
    assert second.input_sqnr_db == pytest.approx(first.sqnr_db, abs=1e-6)  # read where the producer writes it
    assert by["block2_sepconv1/pointwise"].input_sqnr_db == pytest.approx(by["block2_sepconv1/depthwise"].sqnr_db, abs=1e-6)
    assert by["predictions"].sqnr_db < first.sqnr_db  # the logits (softmax saturates: its SQNR says little)
    assert by["block13_sepconv2/pointwise"].sqnr_db < first.sqnr_db - 5


def test_adds_and_pools_map_to_their_keras_layers(artifacts, measured):
    art, _, _ = artifacts
    ctx, errors = measured
    ops = op_layers(interpreter(art / "arm64-litert-int8" / "model.tflite"), ctx.source.keras_model)
    adds = [o for o in ops if o.op == "ADD"]
    assert [o.layer for o in adds] == ["block2_add", "block3_add", "block4_add", "block5_add", "block13_add"]
    assert all(o.part == o.layer for o in adds)
    assert [o.part for o in ops if o.op == "MAX_POOL_2D"] == ["block2_pool", "block3_pool", "block4_pool", "block13_pool"]
    relu = [o for o in ops if o.op == "RELU"]
    assert relu and all(o.layer.endswith("_act") and o.part is None for o in relu)  # standalone activations
    assert [e for e in errors if e.node.startswith("ADD")][0].input_sqnr_db is not None


def test_suffixed_scope_names_resolve_to_the_right_layer(tmp_path):
    """Keras exports scope names with a _N suffix: layer 'add' appears as 'add_1' and layer 'add_1'
    as 'add_1_2' (keras.applications.Xception names its Adds add, add_1, ...)."""
    import keras

    from xception_edge import frameworks

    tf = frameworks.tensorflow()
    x = inp = keras.Input((8, 8, 3))
    c = keras.layers.Conv2D(3, 3, padding="same", name="conv")(x)
    a = keras.layers.Add(name="add")([c, x])
    b = keras.layers.Add(name="add_1")([a, c])
    d = keras.layers.Add(name="add_2")([b, a])
    m = keras.Model(inp, keras.layers.Conv2D(2, 1, name="head")(d), name="tiny")  # its output is named after the signature
    m.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    model = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert()
    ops = op_layers(interpreter(model), m)
    assert [(o.op, o.layer) for o in ops] == [
        ("CONV_2D", "conv"),
        ("ADD", "add"),
        ("ADD", "add_1"),
        ("ADD", "add_2"),
        ("CONV_2D", "head"),
    ]


def test_ignored_scope_keeps_exactly_that_layer_in_float(artifacts):
    art, (model, train, val), tmp = artifacts
    folder = art / "pi-keep-b3"
    m = read_manifest(folder)
    conv = m.conversion
    assert conv["float_layers"] == [KEEP] and conv["float_ops"] == 2 and conv["all_ops_integer"] is False
    assert m.verification.passed and m.profile["quantization"]["ignored_scope"] == [KEEP]
    assert m.input.dtype == "int8" and m.output.dtype == "int8"  # the profile's int8 I/O holds

    import keras

    ops = op_layers(interpreter(folder / "model.tflite"), keras.models.load_model(model))
    summary = op_summary(folder / "model.tflite", frozenset(o.tensor for o in ops if o.layer == KEEP))
    by_tensor = {o["tensor"]: o for o in summary["ops"]}
    kept = [o for o in ops if o.layer == KEEP]
    assert sorted(o.part for o in kept) == [f"{KEEP}/depthwise", f"{KEEP}/pointwise"]
    assert all(not by_tensor[o.tensor]["integer"] for o in kept)  # float
    others = [o for o in ops if o.layer not in (None, KEEP)]
    assert len(others) > 30 and all(by_tensor[o.tensor]["integer"] for o in others)  # int8
    qdq = [o for o in summary["ops"] if o["op"] in ("QUANTIZE", "DEQUANTIZE")]
    assert qdq and all(o["kept_float"] for o in qdq)  # only around the float layer
    assert not [o for o in summary["ops"] if not o["integer"] and not o["kept_float"]]
    # the int8 check still fails for a float op outside the scope
    assert not [o for o in op_summary(folder / "model.tflite")["ops"] if o["kept_float"]]

    ctx = open_context(folder, str(model), train, tmp / "work-keep", num_images=4)
    by = {e.layer: e for e in measure(ctx) if e.layer}
    assert by[f"{KEEP}/depthwise"].own_sqnr_db is None and by[f"{KEEP}/pointwise"].own_sqnr_db is None
    assert by["block3_sepconv2/depthwise"].own_sqnr_db is not None


def test_ignored_scope_errors_name_the_entry(small_model, tmp_path):
    model, train, _ = small_model

    def convert(name, scope):
        return CliRunner().invoke(
            cli,
            [
                "convert",
                "--model",
                str(model),
                "--target",
                str(_profile(tmp_path, name, scope)),
                "--calibration",
                str(train),
                "--num-calibration",
                "8",
                "--no-verify",
                "--out",
                str(tmp_path / name),
            ],
        )

    r = convert("pi-typo", '"block3_sepconv9"')
    assert r.exit_code == 2, r.output
    assert "'block3_sepconv9' is not a layer" in r.output and "block3_sepconv1" in r.output
    r = convert("pi-bn", '"block3_sepconv1_bn"')  # folded into the conv: no op of its own
    assert r.exit_code == 2, r.output
    assert "block3_sepconv1_bn" in r.output and "fused into the op of block3_sepconv1" in r.output
    assert not (tmp_path / "pi-typo" / "pi-typo").exists() and not (tmp_path / "pi-bn" / "pi-bn").exists()
