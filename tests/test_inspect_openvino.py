"""Per-layer quantization error of an NNCF int8 OpenVINO IR (backends/openvino/inspect.py), with the
real OpenVINO and NNCF, on the small trained Xception-family model."""

import dataclasses
import math
import statistics
from pathlib import Path

import pytest

from xception_edge.inspection import backend_module
from xception_edge.inspection.base import SQNR_CAP_DB, blame, finish
from xception_edge.inspection.context import open_context
from xception_edge.model_io import _all_layers


@pytest.fixture(scope="module")
def inspected(converted_all, tmp_path_factory):
    """The int8 IR and the fp32 IR of the suite's one conversion (read only), and the int8 IR's measured layers."""
    art, _, (model, train, _) = converted_all
    tmp = tmp_path_factory.mktemp("inspect_ov")
    ctx = open_context(art / "x86-openvino-int8", str(model), train, tmp / "work", num_images=8)
    errors = finish(backend_module("openvino").measure(ctx), ctx.parts)
    return ctx, errors, art / "openvino-fp32"


def test_every_weighted_layer_part_and_residual_add_is_matched(inspected):
    ctx, errors, _ = inspected
    layers = [e.layer for e in errors if e.layer is not None]
    assert len(layers) == len(set(layers)), "two ops claim one layer part"
    weighted = {name for name, part in ctx.parts.items() if part.weighted}
    assert weighted and weighted <= set(layers), weighted - set(layers)
    for e in errors:  # weighted ops carry their Keras names in the IR
        if e.layer in weighted:
            assert e.node == e.layer and e.keras_layer == ctx.parts[e.layer].layer
    keras_adds = {layer.name for layer in _all_layers(ctx.source.keras_model) if layer.__class__.__name__ == "Add"}
    add_errors = [e for e in errors if e.layer in keras_adds]
    assert keras_adds and {e.layer for e in add_errors} == keras_adds
    # Adds keep OpenVINO's generated names; the fp32 model converted in this process numbers them
    # differently from the IR converted earlier, so they were matched by graph structure
    assert all(e.node != e.layer for e in add_errors)
    assert set(blame(errors)) <= {ctx.parts[n].layer for n in weighted}


def test_int8_sqnr_values_are_finite_and_sane(inspected):
    ctx, errors, _ = inspected
    for e in errors:
        for v in (e.sqnr_db, e.input_sqnr_db, e.own_sqnr_db):
            assert v is not None and math.isfinite(v), e
        # int8 activations with a few bits of error: well above noise, well below the float cap
        assert 3.0 < e.sqnr_db < 60.0, e
        assert 3.0 < e.own_sqnr_db < 80.0, e
        assert e.added_db is not None and e.added_db >= 0.0
    by = {e.layer: e for e in errors}
    # error accumulates: the classifier reads a noisier tensor than the first convolution
    assert by["predictions"].sqnr_db < by["block1_conv1"].sqnr_db
    # a layer alone (fed fp32 inputs) loses less than the whole network up to it has lost
    assert statistics.median(e.own_sqnr_db for e in errors) > statistics.median(e.sqnr_db for e in errors) + 6.0
    assert errors == sorted(errors, key=lambda e: (e.sqnr_db, e.order))


def test_fp32_ir_against_fp32_source_is_exact(inspected):
    """The same measurement with the fp32 IR in place of the int8 one: every tapped tensor must
    agree (≥ 60 dB), which fails if ops or ports were paired with the wrong counterpart."""
    from xception_edge.exports import Exports
    from xception_edge.model_io import load_source

    ctx, errors, fp32_dir = inspected
    # the int8 IR was made from the model after its profile's CLE (ctx.source is that model, rebuilt
    # from the artifact's transforms.npz); the fp32 IR from the model as given
    assert ctx.manifest.transforms["applied"] == ["cle"]
    src = load_source(ctx.manifest.source_model["spec"])
    work = ctx.exports.workdir.parent / "fp32-exports"
    work.mkdir(exist_ok=True)
    fp32_ctx = dataclasses.replace(ctx, artifact=Path(fp32_dir), source=src, exports=Exports(src, work))
    exact = backend_module("openvino").measure(fp32_ctx)
    assert {e.layer for e in exact} == {e.layer for e in errors}
    for e in exact:
        assert e.sqnr_db >= 60.0 and e.input_sqnr_db >= 60.0 and e.own_sqnr_db >= 60.0, e
    assert min(e.sqnr_db for e in errors) < 40.0 < SQNR_CAP_DB
