"""The built-in demo: deterministic synthetic data, the compact Xception, a short training run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xception_edge.demo import TINY, DemoConfig, ensure_demo
from xception_edge.demo.data import CLASS_NAMES, make_dataset, render

REPO = Path(__file__).resolve().parents[1]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    make_dataset(root, seed=0, train_per_class=16, val_per_class=5, image_size=80)
    return root


def test_classes_are_many_unique_and_sorted():
    assert len(CLASS_NAMES) >= 10
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert list(CLASS_NAMES) == sorted(CLASS_NAMES)  # label index == sorted folder order


def test_layout_formats_and_image_sizes(small_dataset):
    from PIL import Image

    for split, n in (("train", 16), ("val", 5), ("val_hard", 5)):
        assert sorted(p.name for p in (small_dataset / split).iterdir()) == sorted(CLASS_NAMES)
        for name in CLASS_NAMES:
            files = list((small_dataset / split / name).iterdir())
            assert len(files) == n
            assert all(f.name.startswith(f"{name}_") for f in files)
    suffixes = {p.suffix for p in small_dataset.rglob("*_*.*")}
    assert {".png", ".jpg"} <= suffixes
    with Image.open(next((small_dataset / "train" / "circle").iterdir())) as img:
        assert img.size == (80, 80) and img.mode == "RGB"
    meta = json.loads((small_dataset / "dataset.json").read_text())
    assert meta["seed"] == 0 and meta["classes"] == list(CLASS_NAMES)
    assert not [p for p in small_dataset.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, small_dataset):
    again, other = tmp_path / "again", tmp_path / "other"
    make_dataset(again, seed=0, train_per_class=16, val_per_class=5, image_size=80)
    make_dataset(other, seed=1, train_per_class=16, val_per_class=5, image_size=80)
    first = _digests(small_dataset)
    assert _digests(again) == first
    second = _digests(other)
    assert second.keys() == first.keys()
    changed = [k for k in first if k.endswith((".png", ".jpg")) and first[k] != second[k]]
    assert len(changed) == sum(1 for k in first if k.endswith((".png", ".jpg")))


def test_images_vary_and_hard_split_has_lower_contrast():
    easy = [render("square", np.random.default_rng([0, 0, 7, i]), 64) for i in range(20)]
    hard = [render("square", np.random.default_rng([0, 2, 7, i]), 64, hard=True) for i in range(20)]
    assert len({a.tobytes() for a in easy}) == 20

    # spread between the brightest and darkest tenth of pixels: low contrast in val_hard
    def spread(imgs):
        return np.median([np.subtract(*np.percentile(a.mean(-1), [95, 5])) for a in imgs])

    assert spread(hard) < spread(easy)


def test_make_dataset_replaces_existing_root(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, train_per_class=1, val_per_class=1, image_size=72)
    (root / "stale.txt").write_text("old")
    make_dataset(root, train_per_class=2, val_per_class=1, image_size=72)
    assert not (root / "stale.txt").exists()
    assert len(list((root / "train" / "ring").iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_package_imports_without_tensorflow():
    code = (
        "import sys, xception_edge.demo, xception_edge.demo.model, xception_edge.demo.train;"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_compact_xception_structure():
    import keras

    from xception_edge.demo.model import build_compact_xception

    model = build_compact_xception(input_size=80, num_classes=12)
    assert model.input_shape == (None, 80, 80, 3)
    assert model.output_shape == (None, 12)
    names = {layer.name for layer in model.layers}
    for expected in ("block1_conv1", "block1_conv2", "block2_sepconv1", "block2_sepconv1_bn",
                     "block5_sepconv3_act", "block13_sepconv2_act", "block14_sepconv2_act",
                     "avg_pool", "predictions"):  # fmt: skip
        assert expected in names
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("SeparableConv2D") >= 10
    assert kinds.count("Add") == 3 + 4 + 1  # entry blocks 2-4, middle blocks, exit block 13
    assert "Rescaling" not in kinds
    assert 50_000 < model.count_params() < 1_000_000
    x = np.random.default_rng(0).uniform(-1, 1, (4, 80, 80, 3)).astype("float32")
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert isinstance(model, keras.Model)


def test_compact_xception_refuses_small_input():
    from xception_edge.demo.model import build_compact_xception

    with pytest.raises(ValueError, match="71"):
        build_compact_xception(input_size=64)


@pytest.mark.slow  # builds the tiny demo (once a session, shared with test_demo_command)
def test_short_training_learns_something(tiny_demo):
    """The session's one tiny demo build (ensure_demo -> make_dataset + train_demo_model)."""
    import keras

    stats = tiny_demo.stats
    chance = 1 / len(CLASS_NAMES)
    assert stats["train_top1"] > 4 * chance  # measured: ~0.99
    assert stats["val_top1"] > 1.5 * chance  # measured: ~0.85
    assert stats["num_train"] == TINY.train_per_class * len(CLASS_NAMES) and stats["train_seconds"] > 0
    model = keras.models.load_model(tiny_demo.model)
    assert model.input_shape == (None, TINY.input_size, TINY.input_size, 3)
    assert model.output_shape == (None, len(CLASS_NAMES))
    assert not [p.name for p in tiny_demo.root.iterdir() if p.name.startswith(".")]  # no temp file left
    assert {"data", "model.keras", "stats.json"} <= {p.name for p in tiny_demo.root.iterdir()}


def test_ensure_demo_caches_and_rebuilds_after_interruption(tmp_path, monkeypatch):
    import xception_edge.demo.train as train_mod

    calls = []

    def fake_train(data_root, out_path, **kwargs):
        calls.append(kwargs)
        Path(out_path).write_bytes(b"model")
        return {"val_top1": 0.9, "val_hard_top1": 0.5, "params": 1}

    monkeypatch.setattr(train_mod, "train_demo_model", fake_train)
    config = DemoConfig(name="unit", train_per_class=1, val_per_class=1, image_size=72)
    first = ensure_demo(tmp_path, config=config)
    assert first.root == tmp_path / "demo-v1-unit" and first.model.is_file()
    assert first.labels == CLASS_NAMES and first.stats["val_top1"] == 0.9
    again = ensure_demo(tmp_path, config=config)
    assert len(calls) == 1 and again.stats == first.stats
    (first.root / "stats.json").unlink()  # as if interrupted before the build finished
    ensure_demo(tmp_path, config=config)
    assert len(calls) == 2
    ensure_demo(tmp_path, config=DemoConfig(**{**config.__dict__, "epochs": 3}))  # config change
    assert len(calls) == 3 and calls[-1]["epochs"] == 3


def test_tiny_demo_builds_a_small_dataset_and_a_model_the_builder_accepts(tmp_path, monkeypatch):
    """What ensure_demo(config=TINY) really builds (the images are blank, the training faked): at
    most 1000 training images, and training arguments build_compact_xception accepts (>= 71 px)."""
    import xception_edge.demo.data as data_mod
    import xception_edge.demo.train as train_mod
    from xception_edge.demo.model import build_compact_xception

    trained = []

    def fake_train(data_root, out_path, **kwargs):
        trained.append(kwargs)
        Path(out_path).write_bytes(b"model")
        return {"val_top1": 0.9, "val_hard_top1": 0.5, "params": 1}

    monkeypatch.setattr(data_mod, "render", lambda name, rng, size, hard=False: np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(train_mod, "train_demo_model", fake_train)
    demo = ensure_demo(tmp_path, config=TINY)
    train_images = [p for p in (demo.data / "train").rglob("*") if p.is_file()]
    assert 0 < len(train_images) <= 1000 and len(train_images) % len(CLASS_NAMES) == 0
    assert len([p for p in (demo.data / "val").rglob("*") if p.is_file()]) == 10 * len(CLASS_NAMES)  # the demo test's 120
    (kwargs,) = trained
    model = build_compact_xception(
        num_classes=len(CLASS_NAMES), **{k: kwargs[k] for k in ("input_size", "width", "middle_blocks")}
    )
    assert model.input_shape == (None, kwargs["input_size"], kwargs["input_size"], 3) and model.count_params() < 1_000_000
