"""Shared fixtures: small real images, and (session-scoped) a small trained Xception-family model."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Ray: token authentication (its default for a new local cluster), with a token of this session in
# the environment every node, driver and subprocess inherits, set before anything imports ray.
# Whatever the user's ~/.ray/auth_token holds (Ray writes one on a local `ray.init()`) or lacks, the
# test clusters and their clients then agree, and no test writes one.
os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))

from raycluster import ray_cluster  # noqa: E402,F401  (the session's one two-node Ray cluster: tests/raycluster.py)


def write_images(root: Path, classes=("a", "b", "c"), per_class: int = 12, size=(40, 48), seed: int = 0) -> Path:
    """Class folders of PNG stripe images; class k has stripes at angle k*180/len(classes)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    for k, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        angle = np.pi * k / len(classes)
        for i in range(per_class):
            period = rng.uniform(6, 12)
            wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 6.3)) > 0
            fg, bg = rng.integers(120, 256, 3), rng.integers(0, 110, 3)
            arr = np.where(wave[..., None], fg, bg) + rng.normal(0, 12, size + (3,))
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(d / f"{name}_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_images(tmp_path / "images")


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A compact Xception-family model (71 px, 3 classes) trained for real on class folders of
    images that differ in brightness. Returns (model_path, train_dir, val_dir)."""
    import keras

    from xception_edge.demo.model import build_compact_xception
    from xception_edge.preprocess import PreprocessSpec, load_images, list_images

    root = tmp_path_factory.mktemp("small")
    train = write_images(root / "train", per_class=40, seed=1)
    val = write_images(root / "val", per_class=10, seed=2)
    keras.utils.set_random_seed(0)
    model = build_compact_xception(input_size=71, num_classes=3, width=4, middle_blocks=1)
    files = list_images(train)
    x, failed = load_images(files, PreprocessSpec(71, 71))
    y = np.array([("a", "b", "c").index(f.parent.name) for f in files])
    for layer in model.layers:  # few steps: let BatchNorm's moving statistics catch up
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=8, verbose=0, shuffle=True)
    path = root / "small.keras"
    model.save(path)
    return path, train, val


@pytest.fixture(scope="session")
def small_saved_model(small_model, tmp_path_factory) -> Path:
    """small_model exported once as a TensorFlow SavedModel (a --model input of its own)."""
    import keras

    path = tmp_path_factory.mktemp("saved") / "sm"
    keras.models.load_model(small_model[0]).export(str(path), format="tf_saved_model", verbose=False)
    return path


def plant_outlier_channel(src: Path, dst: Path, layer_name: str, factor: float, channel: int = 0) -> Path:
    """The same function, quantized badly: one channel of a SeparableConv2D's depthwise output is
    scaled by ``factor`` and its pointwise weights by 1/factor. The float model is unchanged (up to
    rounding), but the per-tensor int8 range of that activation grows ``factor``-fold and crushes
    its other channels — the classic outlier-channel failure of post-training int8."""
    import keras

    model = keras.models.load_model(src)
    layer = model.get_layer(layer_name)
    weights = layer.get_weights()
    dw, pw = np.array(weights[0]), np.array(weights[1])
    mult = dw.shape[-1]
    dw[:, :, channel, :] *= factor
    pw[:, :, channel * mult : (channel + 1) * mult, :] /= factor
    layer.set_weights([dw, pw, *weights[2:]])
    model.save(dst)
    return dst


@pytest.fixture(scope="session")
def outlier_model(small_model, tmp_path_factory):
    """small_model with a 1000x outlier channel in block3_sepconv1: int8 collapses to one class on
    every backend unless that layer stays float. Returns (model_path, train_dir, val_dir)."""
    path, train, val = small_model
    out = plant_outlier_channel(path, tmp_path_factory.mktemp("outlier") / "outlier.keras", "block3_sepconv1", 1000.0)
    return out, train, val


@pytest.fixture(scope="session")
def converted_all(small_model, tmp_path_factory):
    """The small model converted to every built-in target once (60 calibration images, verified on
    val), for every test to share. Returns (out_dir, convert's --json payload, small_model).
    Shared: a test that changes the folder copies it first (shutil.copytree into tmp_path)."""
    import json

    from click.testing import CliRunner

    from xception_edge.cli import cli

    model, train, val = small_model
    out = tmp_path_factory.mktemp("all") / "out"
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            "--model",
            str(model),
            "--target",
            "all",
            "--calibration",
            str(train),
            "--num-calibration",
            "60",
            "--verify-data",
            str(val),
            "--out",
            str(out),
            "--json",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    (out.parent / "convert.log").write_text(r.output)
    before = _digests(out)
    yield out, json.loads(r.stdout), small_model
    assert _digests(out) == before, "a test changed the shared conversion folder; copy it into tmp_path first"


def _digests(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "" for p in root.rglob("*")}


@pytest.fixture(scope="session")
def converted_all_log(converted_all) -> str:
    """What that one conversion printed (its progress and warnings)."""
    return (converted_all[0].parent / "convert.log").read_text()


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The tiny demo (config TINY: synthetic dataset + trained compact Xception), built once into a
    session cache folder: test_demo checks the training, test_demo_command runs the demo from it."""
    from xception_edge.demo import TINY, ensure_demo

    return ensure_demo(tmp_path_factory.mktemp("demo-cache"), config=TINY)


@pytest.fixture(scope="session")
def emulated_arm64():
    """The emulated arm64 device with LiteRT and ONNX Runtime (built once, kept in the toolkit's
    cache: $XCEPTION_EDGE_CACHE or ~/.cache/xception-edge)."""
    from xception_edge.devices import emulated

    return emulated.ensure(("litert", "onnxruntime"))


def older_python() -> str | None:
    """A Python 3.6-3.8 that runs, for the "device Python too old" tests (pyenv's versions, then
    PATH; a pyenv shim may not run); None when the machine has none."""
    import shutil
    import subprocess

    for name in ("python3.8", "python3.7", "python3.6"):
        for found in [*Path.home().glob(f".pyenv/versions/{name[6:]}*/bin/{name}"), shutil.which(name)]:
            if found and subprocess.run([str(found), "-c", "pass"], capture_output=True).returncode == 0:
                return str(found)
    return None


# Helpers of the transform tests (tests/test_transforms.py, test_bias_correction.py).
def images(folder) -> np.ndarray:
    """Every image of ``folder``, preprocessed for the 71 px small model."""
    from xception_edge.preprocess import PreprocessSpec, list_images, load_images

    x, failed = load_images(list_images(folder), PreprocessSpec(71, 71))
    assert not failed
    return x


def load(path):
    import keras

    return keras.models.load_model(path, compile=False)


def probs(model, x) -> np.ndarray:
    """The model's softmax outputs in batches of 16, as float64."""
    return np.concatenate([np.asarray(model(x[i : i + 16], training=False)) for i in range(0, len(x), 16)]).astype(np.float64)
