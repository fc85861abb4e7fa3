"""Shared fixtures: small real images, and (session-scoped) a small trained Xception-family model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def write_images(root: Path, classes=("a", "b", "c"), per_class: int = 12, size=(40, 48), seed: int = 0) -> Path:
    """Class folders of distinguishable PNG images (class k: mean brightness rises with k)."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(rng.normal(60 + 70 * k, 25, size + (3,)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"{name}_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_images(tmp_path / "images")
