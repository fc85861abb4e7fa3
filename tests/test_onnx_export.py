"""The ONNX writer (xception_edge.onnx_export): Keras -> ONNX layer by layer, without tf2onnx's
tracing. Each export is run by ONNX Runtime (graph optimizations off: the graph as written) and
compared with Keras, and with tf2onnx's export of the same model; what it does not cover goes
through tf2onnx, and the manifest says which exporter wrote the model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import images, load, probs

from xception_edge import onnx_export


def ort_run(path, x, optimize: bool = False) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: np.asarray(x, np.float32)})[0].astype(np.float64)


def op_types(path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_small_xception_matches_keras_and_tf2onnx(small_model, tmp_path):
    """The trained small Xception: the writer's export equals Keras within 1e-5 on real images, and
    tf2onnx's export of the same model image for image; every BatchNormalization is folded and the
    only Transpose is the input's."""
    path, train, val = small_model
    model = load(path)
    x = images(val)
    info = onnx_export.export(model, tmp_path / "own.onnx")
    want = probs(model, x)
    got = ort_run(tmp_path / "own.onnx", x)
    assert np.abs(got - want).max() < 1e-5 and (got.argmax(-1) == want.argmax(-1)).all()
    model.export(str(tmp_path / "tf2onnx.onnx"), format="onnx", opset_version=17, verbose=False)
    theirs = ort_run(tmp_path / "tf2onnx.onnx", x)
    assert np.abs(got - theirs).max() < 1e-5
    ops = op_types(tmp_path / "own.onnx")
    assert "BatchNormalization" not in ops and ops.count("Transpose") == 1 and ops[0] == "Transpose"
    n_bn = sum(type(layer).__name__ == "BatchNormalization" for layer in model.layers)
    assert info["folded_bn"] == n_bn > 0
    assert onnx_export.check(model, tmp_path / "own.onnx", x[:2]) < 1e-5


def _zoo():
    """A functional model with the other layers the writer covers: Rescaling, strided 'same'
    convolutions on an odd size, depth multiplier 2, ReLU6, average pooling, Concatenate, a BN that
    cannot fold (its input has two readers), Flatten (NHWC order), Dense + BN, Dropout, Softmax."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inp = keras.Input((37, 41, 3), name="pixels")
    x = layers.Rescaling(0.5, offset=0.1, name="rescale")(inp)
    a = layers.Conv2D(6, 3, strides=2, padding="same", use_bias=True, activation="relu", name="conv_a")(x)
    b = layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="dw_b")(x)
    b = layers.ReLU(max_value=6.0, name="relu6")(b)
    y = layers.Concatenate(name="cat")([a, b])
    z = layers.BatchNormalization(name="bn_shared")(y)
    y = layers.Add(name="add")([y, z])
    y = layers.SeparableConv2D(8, 5, padding="same", depth_multiplier=2, name="sep")(y)
    y = layers.BatchNormalization(name="sep_bn")(y)
    y = layers.Activation("swish", name="act")(y)
    y = layers.AveragePooling2D(3, strides=2, padding="same", name="avg")(y)
    y = layers.MaxPooling2D(2, name="max")(y)
    y = layers.Flatten(name="flat")(y)
    y = layers.Dense(7, name="fc")(y)
    y = layers.BatchNormalization(name="fc_bn")(y)
    y = layers.Dropout(0.3, name="drop")(y)
    y = layers.Dense(4, name="head")(y)
    out = layers.Softmax(name="probs")(y)
    model = keras.Model(inp, out, name="zoo")
    for layer in model.layers:  # non-trivial BN statistics
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([rng.uniform(0.5, 2, c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 2, c)])
    return model


def test_every_covered_layer_matches_keras(tmp_path):
    model = _zoo()
    x = np.random.default_rng(0).uniform(-1, 1, (6, 37, 41, 3)).astype(np.float32)
    info = onnx_export.export(model, tmp_path / "zoo.onnx")
    want = np.asarray(model(x, training=False), np.float64)
    assert np.abs(ort_run(tmp_path / "zoo.onnx", x) - want).max() < 1e-5
    assert info["folded_bn"] == 2  # sep_bn and fc_bn; bn_shared's input is read twice
    assert np.abs(ort_run(tmp_path / "zoo.onnx", x, optimize=True) - want).max() < 1e-5


def test_nested_model_as_a_layer(small_model, tmp_path):
    """A fine-tuning head on a base model used as a layer (the usual Keras transfer-learning shape)."""
    import keras

    path, _, val = small_model
    base = load(path)
    trunk = keras.Model(base.inputs, base.get_layer("avg_pool").output, name="trunk")
    inp = keras.Input((71, 71, 3))
    out = keras.layers.Dense(5, activation="softmax", name="new_head")(keras.layers.Dropout(0.2)(trunk(inp)))
    model = keras.Model(inp, out)
    x = images(val)[:8]
    onnx_export.export(model, tmp_path / "nested.onnx")
    assert np.abs(ort_run(tmp_path / "nested.onnx", x) - probs(model, x)).max() < 1e-5


def test_uncovered_layers_are_named_and_nothing_is_written(tmp_path):
    import keras

    inp = keras.Input((8, 8, 3))
    y = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, activation="gelu", name="c")(y))
    model = keras.Model(inp, y)
    assert onnx_export.unsupported_layers(model) == ["double (Lambda)"]
    with pytest.raises(onnx_export.Unsupported, match=r"double \(Lambda\)"):
        onnx_export.export(model, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, activation="gelu", name="c")(inp)))
    with pytest.raises(onnx_export.Unsupported, match="c: activation 'gelu'"):
        onnx_export.export(model, tmp_path / "y.onnx")


def test_convert_uses_the_writer_and_falls_back_to_tf2onnx(small_model, tmp_path):
    """Through convert: the small model's ONNX targets come from the writer (the manifest's
    conversion record says which exporter wrote the model); a model with a layer it does not cover (LayerNormalization) goes through
    tf2onnx, and says so."""
    import keras

    import xception_edge as xe
    from xception_edge.artifact import read_manifest

    path, train, val = small_model
    results = xe.convert(path, ["onnxruntime-fp32"], calibration=train, verify_data=val, num_calibration=8, out=tmp_path / "a")
    assert all(r.ok for r in results), [r.error for r in results]
    m = read_manifest(tmp_path / "a" / "onnxruntime-fp32")
    assert m.conversion["exporter"].startswith(onnx_export.TOOL)
    base = load(path)
    inp = keras.Input((71, 71, 3))
    model = keras.Model(inp, base(keras.layers.LayerNormalization(name="norm")(inp)))
    model.save(tmp_path / "norm.keras")
    results = xe.convert(
        tmp_path / "norm.keras", ["onnxruntime-fp32"], calibration=train, verify_data=val, num_calibration=8, out=tmp_path / "b"
    )
    assert all(r.ok for r in results), [r.error for r in results]
    m = read_manifest(tmp_path / "b" / "onnxruntime-fp32")
    assert m.conversion["exporter"].startswith("tf2onnx 1.")
