"""Per-layer quantization error of ONNX Runtime QDQ artifacts (onnxruntime.quantization.qdq_loss_debug),
on the small trained Xception-family model: x86-onnxruntime-int8, the same profile with per-tensor
weights, and with one SeparableConv2D kept in float (ignored_scope -> nodes_to_exclude)."""

import math
import re
import shutil

import pytest

from xception_edge.artifact import read_manifest
from xception_edge.inspection import backend_module
from xception_edge.backends.onnxruntime import inspect as ort_inspect
from xception_edge.inspection.base import finish
from xception_edge.inspection.context import open_context
from xception_edge.pipeline import ConvertRequest, run_convert
from xception_edge.targets import builtin_dir

TARGET = "x86-onnxruntime-int8"
NUM_IMAGES = 16
KEPT = "block4_sepconv1"


@pytest.fixture(scope="module")
def artifacts(converted_all, tmp_path_factory):
    """The built-in profile (from the suite's one conversion), and copies with per-tensor weights
    and with KEPT in float, converted here on the same 60 calibration images."""
    shared, _, (model, train, _) = converted_all
    calibration_images = read_manifest(shared / TARGET).calibration["count"]
    tmp = tmp_path_factory.mktemp("ort-inspect")
    text = (builtin_dir() / f"{TARGET}.toml").read_text()
    variants = {
        "ort-per-tensor": re.sub(r"(?m)^per_channel = true$", "per_channel = false", text),
        "ort-keep": text.replace("[quantization]\n", f'[quantization]\nignored_scope = ["{KEPT}"]\n'),
    }
    assert "per_channel = false" in variants["ort-per-tensor"] and "ignored_scope" in variants["ort-keep"]
    for name, body in variants.items():
        (tmp / f"{name}.toml").write_text(body.replace(f'name = "{TARGET}"', f'name = "{name}"'))
    targets = tuple(str(tmp / f"{name}.toml") for name in variants)
    request = ConvertRequest(
        model=str(model), targets=targets, out=tmp / "art", calibration=train, num_calibration=calibration_images
    )
    results = run_convert(request)
    assert all(r.ok for r in results), [r.error for r in results]
    shutil.copytree(shared / TARGET, tmp / "art" / TARGET)
    return tmp / "art", tmp


def _measure(artifact, small_model, workdir, source=None):
    model, train, _ = small_model
    ctx = open_context(artifact, str(model), train, workdir, num_images=NUM_IMAGES, source=source)
    return ctx, backend_module("onnxruntime").measure(ctx)


@pytest.fixture(scope="module")
def measured(artifacts, small_model):
    art, tmp = artifacts
    ctx, errors = _measure(art / TARGET, small_model, tmp / "work")
    _, tensor_errors = _measure(art / "ort-per-tensor", small_model, tmp / "work", source=ctx.source)
    _, keep_errors = _measure(art / "ort-keep", small_model, tmp / "work", source=ctx.source)
    return ctx, finish(errors, ctx.parts), finish(tensor_errors, ctx.parts), finish(keep_errors, ctx.parts)


def test_every_weighted_layer_part_and_residual_add_is_matched_once(measured):
    ctx, errors, _, keep = measured
    weighted = {name for name, p in ctx.parts.items() if p.weighted}
    assert {"block1_conv1", "block2_sepconv1/depthwise", "block2_sepconv1/pointwise", "predictions"} <= weighted
    for errs in (errors, keep):
        matched = [e.layer for e in errs if e.layer in weighted]
        assert sorted(matched) == sorted(weighted)  # each exactly once
    # residual Adds: one per Keras Add layer, named after it
    keras_adds = [layer.name for layer in ctx.source.keras_model.layers if layer.__class__.__name__ == "Add"]
    assert len(keras_adds) >= 2 and all(ctx.parts[a].kind == "residual-add" for a in keras_adds)
    assert sorted(e.layer for e in errors if e.node.endswith("/Add")) == sorted(keras_adds)
    assert all(e.layer is not None for e in errors)


def test_sqnr_values_are_finite_sane_and_accumulate(measured):
    ctx, errors, _, _ = measured
    for e in errors:
        for v in (e.sqnr_db, e.input_sqnr_db, e.own_sqnr_db):
            assert v is not None and math.isfinite(v), e
        assert 5.0 < e.sqnr_db < 70.0 and 5.0 < e.input_sqnr_db < 70.0 and 10.0 < e.own_sqnr_db < 80.0, e
    by = {e.layer: e for e in errors}
    first = by["block1_conv1"]
    # the network input is quantized (uint8) too: measured, not assumed exact, and better than anything after it
    assert first.input_sqnr_db < 60.0 and first.input_sqnr_db > max(e.sqnr_db for e in errors)
    # error accumulates: from the middle flow on, every output is worse than the first conv's
    deep = [e for e in errors if e.order > by["block4_sepconv1/depthwise"].order and e.kind != "dense"]
    assert len(deep) >= 8 and max(e.sqnr_db for e in deep) < first.sqnr_db - 3.0
    # one tensor, one number: a pointwise conv reads what its depthwise conv wrote
    for name, p in ctx.parts.items():
        if p.kind == "depthwise" and name.endswith("/depthwise"):
            assert by[f"{p.layer}/pointwise"].input_sqnr_db == by[name].sqnr_db
    # the own error (output rounding and int8 weights) is the smaller part of the accumulated error deep in the net
    assert sum(e.own_sqnr_db > e.sqnr_db for e in errors) >= 0.8 * len(errors)


def test_per_tensor_weights_lose_more_at_the_depthwise_convs(measured):
    ctx, per_channel, per_tensor, _ = measured
    depthwise = [n for n, p in ctx.parts.items() if p.kind == "depthwise"]

    def mean(errors, field):
        by = {e.layer: e for e in errors}
        return sum(getattr(by[n], field) for n in depthwise) / len(depthwise)

    # one scale per weight tensor instead of one per channel: both the accumulated and the own error grow
    assert mean(per_tensor, "sqnr_db") < mean(per_channel, "sqnr_db") - 0.5
    assert mean(per_tensor, "own_sqnr_db") < mean(per_channel, "own_sqnr_db") - 0.3


def test_a_layer_kept_in_float_loses_less(measured):
    """nodes_to_exclude keeps both Convs of the layer and their weights in float; what the pointwise
    one writes is still quantized where a quantized op reads it (the next depthwise conv)."""
    _, quantized, _, keep = measured
    q, k = ({e.layer: e for e in errs} for errs in (quantized, keep))
    assert k[f"{KEPT}/depthwise"].own_sqnr_db is None  # float weights, output read by the float pointwise conv
    assert k[f"{KEPT}/pointwise"].own_sqnr_db > q[f"{KEPT}/pointwise"].own_sqnr_db + 1.0
    assert k[f"{KEPT}/pointwise"].sqnr_db > q[f"{KEPT}/pointwise"].sqnr_db + 0.5
    assert k["block1_conv1"].sqnr_db == pytest.approx(q["block1_conv1"].sqnr_db, abs=1e-6)  # upstream: the same model


def test_chunks_accumulate_over_the_whole_image_set(artifacts, small_model, measured, monkeypatch):
    """One image per chunk gives the SQNR of all images together, as the adaptive chunks do."""
    ctx, errors, _, _ = measured
    monkeypatch.setattr(ort_inspect, "MEMORY_BUDGET", 1)
    _, one_by_one = _measure(artifacts[0] / TARGET, small_model, artifacts[1] / "work", source=ctx.source)
    by = {e.node: e for e in one_by_one}
    assert len(by) == len(errors)
    for e in errors:
        assert by[e.node].sqnr_db == pytest.approx(e.sqnr_db, abs=0.05), e.node
        assert by[e.node].own_sqnr_db == pytest.approx(e.own_sqnr_db, abs=0.05), e.node
