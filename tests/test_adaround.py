"""AdaRound on the target's weight grid (xception_edge/transforms/adaround.py) and the per-backend
check that the vendor quantizers reproduce its codes (xception_edge/transforms/grid_check.py).

What the backends do with kernels that already lie on a symmetric per-channel grid (measured here):

* LiteRT int8 and ONNX Runtime int8 (arm64-onnxruntime-int8): scale max|w| / 127 per output
  channel, BN folded in (pointwise and plain convs): every code equal, every kernel.
* ONNX Runtime with reduce_range (x86-onnxruntime-int8): scale max|w| / 64 (codes -64..64, not
  7-bit -63..63), depthwise kernels too: with AdaRound on that grid (weight_qmax=64) every code equal.
  A model rounded on the 127 grid is NOT reproduced there (most weights fall between its codes).
* OpenVINO / NNCF with overflow_fix = "enable" (x86-openvino-int8): Convolution and MatMul weights
  get NNCF's half range, scale max|w| / 63.5, so each channel's largest weight sits on a rounding
  tie (stored as 63 or 64, either way); depthwise (GroupConvolution) weights stay at max|w| / 127.
  With AdaRound on that grid (weight_qmax=63.5, depthwise_qmax=127) every other code is equal: the
  depthwise kernels match fully, the others differ in exactly one weight per output channel.

The conversions pass ``transforms=[]``: the targets' default CLE would rescale the rounded kernels
(and BN) after AdaRound and move them off the grid; AdaRound must be the last weight rewrite.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from xception_edge.errors import BadInput

ITERATIONS = 200  # AIMET's default is 10000; few here to keep the test fast


@pytest.fixture(scope="module")
def data(small_model):
    import keras

    from xception_edge.preprocess import PreprocessSpec, list_images, load_images

    path, train, val = small_model
    cal, _ = load_images(list_images(train), PreprocessSpec(71, 71))
    verify, _ = load_images(list_images(val), PreprocessSpec(71, 71))
    return keras.models.load_model(path), cal, verify


@pytest.fixture(scope="module")
def rounded8(data):
    from xception_edge.transforms import adaround

    model, cal, verify = data
    before = [w.copy() for w in model.get_weights()]
    t0 = time.perf_counter()
    new, record = adaround.transform(model, cal, verify_images=verify, iterations=ITERATIONS)
    seconds = time.perf_counter() - t0
    return new, record, before, seconds


def _matrix(layer, kind: str) -> np.ndarray:
    """A kernel as AdaRound sees it: (K, N), columns the output channels."""
    attr = {"depthwise": "depthwise_kernel", "pointwise": "pointwise_kernel"}.get(kind, "kernel")
    w = np.asarray(getattr(layer, attr).numpy(), np.float64)
    return w.reshape(w.shape[0] * w.shape[1], -1) if kind == "depthwise" else w.reshape(-1, w.shape[-1])


def _codes(w: np.ndarray, d: float) -> np.ndarray:
    top = np.abs(w).max(axis=0)
    return w / np.where(top > 0, top / d, 1.0)


def test_every_kernel_lies_on_its_grid_and_the_input_model_is_unchanged(data, rounded8):
    model, _, _ = data
    new, record, before, seconds = rounded8
    assert seconds < 60, f"the transform took {seconds:.1f} s"
    assert len(record["layers"]) == 33  # 14 separable convs x 2 + 4 convs + the Dense
    for entry in record["layers"]:
        q = _codes(_matrix(new.get_layer(entry["layer"]), entry["kind"]), 127)
        assert np.abs(q - np.round(q)).max() < 1e-4, entry["layer"]
        assert np.abs(q).max() <= 127 + 1e-4
        live = np.abs(q).max(axis=0) > 0
        assert np.allclose(np.abs(q).max(axis=0)[live], 127, atol=1e-4)
    for a, b in zip(model.get_weights(), before):
        assert np.array_equal(a, b)
    assert record["top1_agreement"] == 1.0 and record["max_abs_dp"] < 0.05


def test_adaround_beats_round_to_nearest_on_held_out_positions(rounded8):
    _, record, _, _ = rounded8
    gains = np.array([e["sqnr_adaround_db"] - e["sqnr_nearest_db"] for e in record["layers"]])
    assert np.mean(gains >= -0.05) >= 0.75, gains
    assert np.median(gains) > 0.2, gains
    assert all(0 <= e["flipped_share"] < 0.5 and e["seconds"] > 0 for e in record["layers"])


def test_half_range_grid_keeps_each_channel_largest_weight(data):
    from xception_edge.transforms import adaround

    model, cal, verify = data
    names = ["block1_conv1", "block2_sepconv1"]
    new, record = adaround.transform(
        model, cal, verify_images=verify, iterations=20, max_images=8, layers=names, weight_qmax=63.5, depthwise_qmax=127
    )
    assert [(e["layer"], e["kind"], e["qmax"]) for e in record["layers"]] == [
        ("block1_conv1", "conv", 63.5),
        ("block2_sepconv1", "depthwise", 127.0),
        ("block2_sepconv1", "pointwise", 63.5),
    ]
    q = _codes(_matrix(new.get_layer("block1_conv1"), "conv"), 63.5)
    top = np.abs(q) >= np.abs(q).max(axis=0) - 1e-6
    assert np.allclose(np.abs(q[top]), 63.5)
    assert np.abs(q[~top] - np.round(q[~top])).max() < 1e-4 and np.abs(q[~top]).max() <= 63 + 1e-4
    untouched = new.get_layer("block2_sepconv2").get_weights()[0]
    assert np.array_equal(untouched, model.get_layer("block2_sepconv2").get_weights()[0])


def test_kinds_rounds_only_the_depthwise_kernels(data):
    """``kinds=["depthwise"]``: the cheap variant (9 weights a channel), pointwise kernels left as they are."""
    from xception_edge.transforms import adaround

    model, cal, verify = data
    new, record = adaround.transform(
        model,
        cal,
        verify_images=verify,
        iterations=20,
        max_images=8,
        layers=["block1_conv1", "block2_sepconv1"],
        kinds=["depthwise"],
    )
    assert [(e["layer"], e["kind"]) for e in record["layers"]] == [("block2_sepconv1", "depthwise")]
    assert record["params"]["kinds"] == ["depthwise"]
    old, sep = model.get_layer("block2_sepconv1"), new.get_layer("block2_sepconv1")
    assert np.array_equal(sep.pointwise_kernel.numpy(), old.pointwise_kernel.numpy())
    assert not np.array_equal(sep.depthwise_kernel.numpy(), old.depthwise_kernel.numpy())
    assert np.array_equal(new.get_layer("block1_conv1").kernel.numpy(), model.get_layer("block1_conv1").kernel.numpy())


def test_bad_options_are_refused(data):
    from xception_edge.transforms import adaround

    model, cal, verify = data
    for options in (
        {"nope": 1},
        {"weight_qmax": 63.2},
        {"iterations": 0},
        {"layers": ["missing"]},
        {"kinds": ["separable"]},
        {"kinds": []},
    ):
        with pytest.raises(BadInput):
            adaround.transform(model, cal[:4], verify_images=verify[:4], **options)
    with pytest.raises(BadInput):
        adaround.transform(model, None, verify_images=verify[:4])


def _convert(model, tmp_path, name: str, targets: list[str], train, val):
    from xception_edge.api import convert

    path = tmp_path / f"{name}.keras"
    model.save(path)
    results = convert(path, targets, calibration=train, verify_data=val, num_calibration=40, out=tmp_path / name, transforms=[])
    assert all(r.ok for r in results), [(r.target, r.ok) for r in results]
    return tmp_path / name


def _check(folder, model) -> dict:
    from xception_edge.transforms import grid_check

    report = grid_check.check(folder, model)
    assert len(report["layers"]) == 33 and not report["unmatched"] and not report["float"], report
    return report


def test_litert_and_onnxruntime_int8_reproduce_the_codes(small_model, rounded8, tmp_path):
    _, train, val = small_model
    new = rounded8[0]
    out = _convert(new, tmp_path, "ada127", ["arm64-litert-int8", "arm64-onnxruntime-int8"], train, val)
    for target in ("arm64-litert-int8", "arm64-onnxruntime-int8"):
        report = _check(out / target, new)
        bad = [e for e in report["layers"] if not e["equal"]]
        assert not bad, (target, bad)
        assert max(e["max_step_error"] for e in report["layers"]) < 1e-4


def test_onnxruntime_reduce_range_reproduces_the_64_grid(small_model, tmp_path):
    """Through convert (`transforms=["adaround"]`): the x86 ONNX Runtime target's grid (reduce_range:
    max|w| / 64) is chosen from its profile and recorded; the kernels the artifact keeps in
    transforms.npz rebuild the model it was made from, and ONNX Runtime's quantizer stored exactly
    those codes."""
    import json

    import keras

    from xception_edge.api import convert
    from xception_edge.artifact import read_manifest
    from xception_edge.transforms import variants

    path, train, val = small_model
    (r,) = convert(path, ["x86-onnxruntime-int8"], calibration=train, verify_data=val, num_calibration=40,
                   out=tmp_path / "o", transforms=["adaround"])  # fmt: skip
    assert r.ok, r.error
    folder = tmp_path / "o" / "x86-onnxruntime-int8"
    table = json.loads((folder / "manifest.json").read_text())["transforms"]
    assert table["applied"] == ["adaround"] and table["params"] == {"adaround": {"weight_qmax": 64}}
    made_from = variants.rebuild(keras.models.load_model(path), read_manifest(folder), folder)
    report = _check(folder, made_from)
    assert all(e["equal"] and e["max_code"] == 64 for e in report["layers"]), report["layers"]
