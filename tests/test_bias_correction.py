"""Bias correction on the weight grid (xception_edge.transforms.bias_correction): each corrected
layer's expected output shift under per-channel weight quantization is measured on calibration
images and absorbed by its BatchNormalization's moving mean (or its bias). Run with -s to see
the measured numbers."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import images, load, probs

from xception_edge.errors import BadInput, ConversionFailed
from xception_edge.transforms import TRANSFORMS, apply, bias_correction
from xception_edge.transforms.bias_correction import quantize, weight_quantized


def logits(model, x):
    """The classifier's pre-softmax outputs (avg_pool features times the Dense weights)."""
    import keras

    h = np.asarray(keras.Model(model.inputs, model.get_layer("avg_pool").output)(x, training=False), np.float64)
    kernel, bias = model.get_layer("predictions").get_weights()
    return h @ kernel.astype(np.float64) + bias.astype(np.float64)


def layer_shifts(model, qmodel, names, x):
    """Per layer: the mean over images and positions of (the layer with ``qmodel``'s kernels minus
    the layer with ``model``'s), both run by Keras on the layer's real input in ``model``."""
    import keras

    inputs = keras.Model(model.inputs, [model.get_layer(n).input for n in names])(x, training=False)
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    out = {}
    for name, xi in zip(names, inputs):
        xi = np.asarray(xi)
        if name == "predictions":  # pre-softmax
            w, wq = model.get_layer(name).kernel.numpy(), qmodel.get_layer(name).kernel.numpy()
            out[name] = xi.astype(np.float64).mean(axis=0) @ (wq.astype(np.float64) - w.astype(np.float64))
            continue
        y = np.asarray(model.get_layer(name)(xi), np.float64)
        yq = np.asarray(qmodel.get_layer(name)(xi), np.float64)
        out[name] = (yq - y).mean(axis=(0, 1, 2))
    return out


def correction(model, new, entry) -> np.ndarray:
    """What the transform changed to cancel a layer's shift, as a shift of that layer's output."""
    if entry["sink"] == "bias":
        return -(new.get_layer(entry["layer"]).bias.numpy() - model.get_layer(entry["layer"]).bias.numpy()).astype(np.float64)
    old, cur = model.get_layer(entry["sink"]).moving_mean.numpy(), new.get_layer(entry["sink"]).moving_mean.numpy()
    return (cur - old).astype(np.float64)


@pytest.fixture(scope="module")
def data(small_model):
    path, train, val = small_model
    return load(path), images(train), images(val)


@pytest.fixture(scope="module", params=[8, 4], ids=["8bit", "4bit"])
def corrected(request, data):
    """(bits, model, corrected model, record with its shifts) for 8- and 4-bit weight grids."""
    model, train, val = data
    bits = request.param
    new, record = bias_correction.transform(model, train, verify_images=val, weight_bits=bits, tolerance=1.0)
    return bits, new, record


def test_input_unchanged_float_outputs_within_tolerance_record_jsonable(data, monkeypatch):
    model, train, val = data
    monkeypatch.setitem(TRANSFORMS, "bias_correction", bias_correction.transform)
    before = [w.copy() for w in model.get_weights()]
    ref = probs(model, val)
    scales: dict = {}
    new, (record,) = apply(model, ["bias_correction"], train, verify_images=val, scales=scales)
    assert new is not model
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # input untouched
    assert np.abs(probs(model, val) - ref).max() == 0
    moved = np.abs(probs(new, val) - ref).max()
    assert 0 < moved <= 0.05 and record["max_abs_dp"] == pytest.approx(moved, abs=1e-6)
    json.dumps(record)  # JSON-able as it is (apply took the shift vectors out)
    assert record["name"] == "bias_correction" and record["params"]["weight_qmax"] == 127 and record["images"] == 64
    layers = {e["layer"]: e for e in record["layers"]}
    assert layers["block1_conv1"]["sink"] == "block1_conv1_bn" and layers["block2_residual"]["kind"] == "Conv2D"
    assert layers["block14_sepconv2"]["kind"] == "SeparableConv2D" and layers["predictions"]["sink"] == "bias"
    assert len(layers) == 20 and record["skipped"] == []
    assert set(scales) == {f"bias_correction:{'bias' if e['sink'] == 'bias' else 'bn'}:{e['layer']}" for e in record["layers"]}
    # the recorded shifts re-applied to the original model give the corrected model (for `inspect`)
    rebuilt = bias_correction.apply_shifts(model, {k.split(":", 1)[1]: v for k, v in scales.items()})
    assert all(np.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(rebuilt.get_weights(), new.get_weights()))
    wq = record["weight_quantized"]
    print(f"\n8-bit weight-only on val: before {wq['before']} after {wq['after']}; float max |Δp| {moved:.3g}")
    print("seconds per layer:", {e["layer"]: e["seconds"] for e in record["layers"]}, "total", record["seconds"])


def test_shifts_are_the_mean_output_error_of_the_quantized_layer(data):
    """The recorded delta equals Keras's own layer run with Q(kernels) minus with float kernels,
    averaged over the same calibration images (4-bit: large, clearly non-zero shifts)."""
    model, train, val = data
    new, record = bias_correction.transform(model, train, verify_images=val, weight_bits=4, tolerance=1.0)
    names = ["block1_conv1", "block2_residual", "block2_sepconv1", "block14_sepconv2", "predictions"]
    brute = layer_shifts(model, weight_quantized(model, names, qmax=7), names, train[:64])
    sinks = {e["layer"]: "bias" if e["sink"] == "bias" else "bn" for e in record["layers"]}
    for name in names:
        delta = record["_scales"][f"{sinks[name]}:{name}"]
        assert np.abs(delta).max() > 1e-3, name
        np.testing.assert_allclose(delta, brute[name], rtol=1e-3, atol=2e-5 * np.abs(brute[name]).max(), err_msg=name)


def test_expected_shift_shrinks_on_held_out_images(data, corrected):
    """On val (not used to measure), each layer's mean output shift with Q(kernels) vs float,
    before vs after the correction the transform wrote into the BN mean or the bias."""
    model, train, val = data
    bits, new, record = corrected
    names = [e["layer"] for e in record["layers"]]
    shifts = layer_shifts(model, weight_quantized(model, names, qmax=2 ** (bits - 1) - 1), names, val)
    before, after = [], []
    for e in record["layers"]:
        s = shifts[e["layer"]]
        before.append(np.abs(s).mean())
        after.append(np.abs(s - correction(model, new, e)).mean())
    before, after = np.array(before), np.array(after)
    print(f"\n{bits}-bit per-layer mean |shift| on val, before -> after:")
    for name, b, a in zip(names, before, after):
        print(f"  {name:18s} {b:.3e} -> {a:.3e}  ({a / b:.2f})")
    print(f"  total {before.sum():.3e} -> {after.sum():.3e}; smaller in {np.sum(after < before)}/{len(names)} layers")
    assert np.mean(after < before) >= 0.8, (before, after)
    assert after.sum() < 0.5 * before.sum()


def test_weight_quantized_model_agrees_better_with_the_float_model(data, corrected):
    """The model with fake-quantized kernels vs the ORIGINAL float model on val. Both grids: the
    logits' mean shift (4 bits: at least halved) and RMS error, and the median per-image |Δp|, are
    smaller. 8 bits: mean |Δp| too. 4 bits: its mean |Δp| over 30 images is ruled by the one image
    nearest a class boundary (reported, not asserted; the record's warning says so)."""
    model, train, val = data
    bits, new, record = corrected
    names = [e["layer"] for e in record["layers"]]
    qmax = 2 ** (bits - 1) - 1
    q_before, q_after = weight_quantized(model, names, qmax=qmax), weight_quantized(new, names, qmax=qmax)
    ref, ref_logits = probs(model, val), logits(model, val)
    dp_b, dp_a = np.abs(probs(q_before, val) - ref), np.abs(probs(q_after, val) - ref)
    lg_b, lg_a = logits(q_before, val) - ref_logits, logits(q_after, val) - ref_logits
    mean_b, mean_a = np.abs(lg_b.mean(axis=0)).mean(), np.abs(lg_a.mean(axis=0)).mean()
    rms_b, rms_a = np.sqrt((lg_b**2).mean()), np.sqrt((lg_a**2).mean())
    med_b, med_a = np.median(dp_b.max(axis=1)), np.median(dp_a.max(axis=1))
    print(
        f"\n{bits}-bit weight-only vs float on val: mean |Δp| {dp_b.mean():.3e} -> {dp_a.mean():.3e}; "
        f"median per-image max |Δp| {med_b:.3e} -> {med_a:.3e}; logit mean shift {mean_b:.3f} -> {mean_a:.3f}; "
        f"logit RMS {rms_b:.3f} -> {rms_a:.3f}; record {record['weight_quantized']}"
    )
    assert record["weight_quantized"]["before"]["mean_abs_dp"] == pytest.approx(dp_b.mean(), rel=1e-4, abs=1e-7)
    assert mean_a < (0.5 if bits == 4 else 1.0) * mean_b and rms_a < rms_b and med_a < med_b
    if bits == 8:
        assert dp_a.mean() < dp_b.mean()
        assert record["weight_quantized"]["after"]["top1_agreement"] >= record["weight_quantized"]["before"]["top1_agreement"]


def test_per_channel_quantization_commutes_with_a_per_channel_scale(data):
    """Q(W * f) == Q(W) * f for any per-output-channel f (negative too): the backends fold BN's
    gamma / sqrt(var + eps) into the kernel before quantizing, and the shift folds with it."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (3, 3, 8, 16)).astype(np.float32)
    f = (rng.uniform(0.01, 30, 16) * rng.choice([-1, 1], 16)).astype(np.float32)
    for qmax in (127, 64, 7):
        np.testing.assert_allclose(quantize(w * f, (0, 1, 2), qmax), quantize(w, (0, 1, 2), qmax) * f, rtol=1e-5, atol=0)
    # on the real model: block14_sepconv2's pointwise kernel with its BN folded in
    model = data[0]
    pw = model.get_layer("block14_sepconv2").pointwise_kernel.numpy()
    gamma, _, _, var = model.get_layer("block14_sepconv2_bn").get_weights()
    fold = gamma / np.sqrt(var + model.get_layer("block14_sepconv2_bn").epsilon)
    np.testing.assert_allclose(quantize(pw * fold, (0, 1, 2), 127), quantize(pw, (0, 1, 2), 127) * fold, rtol=1e-5, atol=1e-9)


def synthetic_model():
    """Every eligibility case: a separable conv (depth multiplier 2) -> BN; a conv whose output
    goes to a BN and an Add (skipped); a biased conv with ReLU (its bias absorbs the shift); a conv
    with a ReLU of its own before the BN (skipped); a Dense with bias."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 12, 3))
    x = layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, use_bias=False, name="sep")(inputs)
    x = layers.BatchNormalization(name="sep_bn")(x)
    shared = layers.Conv2D(6, 1, use_bias=False, name="shared")(x)
    x = layers.Add(name="add")([layers.BatchNormalization(name="shared_bn")(shared), shared])
    x = layers.Conv2D(5, 3, activation="relu", name="biased")(x)
    x = layers.Conv2D(4, 3, activation="relu", use_bias=False, name="relu_conv")(x)
    x = layers.GlobalAveragePooling2D()(layers.BatchNormalization(name="relu_bn")(x))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="dense")(x))
    rng = np.random.default_rng(0)
    for bn in ("sep_bn", "shared_bn", "relu_bn"):
        n = model.get_layer(bn).gamma.shape[0]
        model.get_layer(bn).set_weights(
            [rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.5, 3, n)]
        )
    return model


def test_eligibility_sinks_and_skip_reasons():
    model = synthetic_model()
    x = np.random.default_rng(1).uniform(-1, 1, (24, 12, 12, 3)).astype(np.float32)
    new, record = bias_correction.transform(model, x, verify_images=x[:8], weight_bits=4, tolerance=1.0)
    sinks = {e["layer"]: e["sink"] for e in record["layers"]}
    assert sinks == {"sep": "sep_bn", "biased": "bias", "dense": "bias"}
    reasons = {s["layer"]: s["reason"] for s in record["skipped"]}
    assert "one BatchNormalization only" in reasons["shared"] and "activation relu" in reasons["relu_conv"]
    # depth multiplier 2: the separable shift matches Keras's layer run with Q(dw), Q(pw)
    brute = layer_shifts(model, weight_quantized(model, ["sep"], qmax=7), ["sep"], x)["sep"]
    np.testing.assert_allclose(record["_scales"]["bn:sep"], brute, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(correction(model, new, {"layer": "sep", "sink": "sep_bn"}), brute, rtol=1e-3, atol=1e-6)
    only, rec = bias_correction.transform(model, x, verify_images=x[:8], layers=["dense", "add"], tolerance=1.0)
    assert [e["layer"] for e in rec["layers"]] == ["dense"] and rec["skipped"][0]["layer"] == "add"


def test_refusals_are_one_line_errors(data):
    model, train, val = data
    with pytest.raises(ConversionFailed, match=r"transform bias_correction changed the float model's outputs by max \|Δp\|"):
        bias_correction.transform(model, train[:16], verify_images=val, weight_bits=4, tolerance=1e-6)
    with pytest.raises(BadInput, match="unknown option.*bits.*known options"):
        bias_correction.transform(model, train[:4], verify_images=val, bits=8)
    with pytest.raises(BadInput, match="weight_qmax"):
        bias_correction.transform(model, train[:4], verify_images=val, weight_qmax=500)
    with pytest.raises(BadInput, match="calibration"):
        bias_correction.transform(model, None, verify_images=val)
    with pytest.raises(BadInput, match="not_a_layer"):
        bias_correction.transform(model, train[:4], verify_images=val, layers=["not_a_layer"])


def test_litert_int8_end_to_end(data, small_model, tmp_path):
    """The corrected model converted to arm64-litert-int8 vs the uncorrected one, both compared
    with the ORIGINAL float model on val. 30 images are few: assert only 'not clearly worse'."""
    import xception_edge as xe
    from xception_edge.runtime import open_artifact

    model, train_x, val_x = data
    path, train, val = small_model
    new, record = bias_correction.transform(model, train_x, verify_images=val_x)
    fixed = tmp_path / "corrected.keras"
    new.save(fixed)
    ref = probs(model, val_x)
    out = {}
    for label, src in (("without", path), ("with", fixed)):
        (result,) = xe.convert(
            src, ["arm64-litert-int8"], calibration=train, verify_data=val, num_calibration=40, out=tmp_path / label
        )
        assert result.ok, result.error
        p = np.asarray(open_artifact(tmp_path / label / "arm64-litert-int8").predict(val_x), np.float64)
        dp = np.abs(p - ref)
        out[label] = (dp.mean(), np.median(dp.max(axis=1)), np.mean(p.argmax(1) == ref.argmax(1)))
    print(
        f"\nLiteRT int8 vs original float on val: without correction mean |Δp| {out['without'][0]:.3e} "
        f"(median {out['without'][1]:.3e}, top-1 {out['without'][2]:.3f}); with {out['with'][0]:.3e} "
        f"(median {out['with'][1]:.3e}, top-1 {out['with'][2]:.3f})"
    )
    assert out["with"][2] >= out["without"][2] - 1 / 30
    assert out["with"][0] <= 1.5 * out["without"][0] + 0.005


def test_convert_with_cle_and_bias_correction_on_each_targets_grid(small_model, tmp_path):
    """Through convert: one source variant per weight grid (LiteRT's -127..127, ONNX Runtime's
    reduce_range -64..64), each recorded in the manifest with its shifts in transforms.npz; and
    inspect, given the original model, rebuilds the corrected one (else every corrected layer
    would read as a large error)."""
    import xception_edge as xe

    path, train, val = small_model
    targets = ["arm64-litert-int8", "x86-onnxruntime-int8"]
    results = xe.convert(
        path, targets, calibration=train, verify_data=val, num_calibration=40, out=tmp_path / "a",
        transforms=["cle", "bias_correction"],
    )  # fmt: skip
    assert all(r.ok for r in results), [r.error for r in results]
    qmax = {}
    for t in targets:
        manifest = json.loads((tmp_path / "a" / t / "manifest.json").read_text())
        table = manifest["transforms"]
        assert table["applied"] == ["cle", "bias_correction"]
        qmax[t] = table["params"]["bias_correction"]["weight_qmax"]
        with np.load(tmp_path / "a" / t / "transforms.npz") as data:
            kinds = {k.split(":", 1)[0] for k in data.files}
        assert kinds == {"cle", "bias_correction"}
    assert qmax == {"arm64-litert-int8": 127, "x86-onnxruntime-int8": 64}
    result = xe.inspect(tmp_path / "a" / "arm64-litert-int8", path, train, report=tmp_path / "inspect", num_images=8)
    weighted = [e for e in result["artifacts"][0]["layers"] if e["layer"] and e["kind"] != "other"]
    assert weighted and min(e["sqnr_db"] for e in weighted) > 10, [(e["layer"], e["sqnr_db"]) for e in weighted]


def test_nncf_overflow_fix_grid_half_step_and_depthwise(data):
    """OpenVINO with NNCF's overflow fix (x86-openvino-int8) quantizes Convolution and MatMul weights
    with s = max|w| / 63.5 (codes -64..64, the largest weight on the tie) and depthwise kernels with
    / 127 (grid_check measured it on the artifacts): bias correction corrects for that grid, which
    the profile's grid_params hands it."""
    from xception_edge.targets import resolve_target
    from xception_edge.transforms.bias_correction import Grid
    from xception_edge.transforms.variants import grid_params

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 8, 5))
    q = quantize(w, (0, 1, 2), 63.5)
    scale = np.abs(w).max(axis=(0, 1, 2)) / 63.5
    codes = q / scale
    assert np.allclose(codes, np.round(codes), atol=1e-3) and np.abs(np.round(codes)).max() == 64
    assert np.allclose(np.abs(codes).max(axis=(0, 1, 2)), 64, atol=1e-3)  # each channel's largest weight
    model, _, _ = data
    sep = next(layer for layer in model.layers if type(layer).__name__ == "SeparableConv2D")
    qm = weight_quantized(model, [sep.name], qmax=Grid(63.5, 127))
    dw, pw = qm.get_layer(sep.name).depthwise_kernel.numpy(), qm.get_layer(sep.name).pointwise_kernel.numpy()
    assert np.allclose(dw, quantize(sep.depthwise_kernel.numpy(), (0, 1), 127))
    assert np.allclose(pw, quantize(sep.pointwise_kernel.numpy(), (0, 1, 2), 63.5))
    assert not np.allclose(pw, quantize(sep.pointwise_kernel.numpy(), (0, 1, 2), 127))
    ov = resolve_target("x86-openvino-int8")
    ov = dataclasses.replace(ov, quantization=dataclasses.replace(ov.quantization, transforms=("cle", "bias_correction")))
    assert grid_params(ov) == {"bias_correction": {"weight_qmax": 63.5, "depthwise_qmax": 127}}
    # the float outputs may move further on a coarser grid: 0.05 at d = 127, 0.1 at d = 63.5
    assert bias_correction._options({})["tolerance"] == 0.05
    assert bias_correction._options({"weight_qmax": 63.5, "depthwise_qmax": 127})["tolerance"] == 0.1
    with pytest.raises(BadInput, match=r"weight_qmax 63.3 must be a whole or half number"):
        bias_correction.transform(
            model, np.zeros((1, 32, 32, 3), np.float32), verify_images=np.zeros((1, 32, 32, 3), np.float32), weight_qmax=63.3
        )
