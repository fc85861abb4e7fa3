"""A deterministic synthetic image dataset for the built-in demo (numpy + Pillow, no download).

Twelve classes of shapes and textures drawn at random position, scale, rotation and colour
on a flat or gradient background with mild noise. Every image has its own random stream
derived from ``(seed, split, class, index)``, so the same seed always writes the same bytes
and a small dataset holds the first images of a larger one.

Layout::

    ROOT/train/<class>/<class>_<i>.png     (every 5th image is a .jpg)
    ROOT/val/<class>/...
    ROOT/val_hard/<class>/...              (low contrast, more noise: thin margins)
    ROOT/dataset.json                      (how it was made)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Sorted, so label index == position in sorted folder names (the Keras directory convention).
CLASS_NAMES = (
    "checker", "circle", "crescent", "cross", "dots", "hexagon",
    "ring", "square", "star", "stripes_h", "stripes_v", "triangle",
)  # fmt: skip
SPLITS = {"train": 0, "val": 1, "val_hard": 2}
DATASET_VERSION = 1
_SS = 2  # supersampling factor: draw at 2x, box-downsample for anti-aliased edges
_JPEG_QUALITY = 92


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _luma(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Flat colour or a linear gradient between two colours, as (size, size, 3) float."""
    c1 = _colour(rng)
    c2 = c1 if rng.random() < 0.4 else np.clip(c1 + rng.normal(0, 60, 3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    t = np.clip(0.5 + xx * math.cos(angle) + yy * math.sin(angle), 0, 1)[..., None]
    return c1 * (1 - t) + c2 * t


def _foreground(rng: np.random.Generator, bg_mean: np.ndarray) -> np.ndarray:
    """A colour whose brightness differs clearly from the background's."""
    for _ in range(50):
        fg = _colour(rng)
        if abs(_luma(fg) - _luma(bg_mean)) > 60:
            return fg
    return np.full(3, 255.0 if _luma(bg_mean) < 128 else 0.0)


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, r: float, angle: float):
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in points]


def _regular(n: int, inner: float | None = None) -> list[tuple[float, float]]:
    """Unit regular n-gon, or an n-pointed star when an inner radius is given."""
    radii = [1.0] if inner is None else [1.0, inner]
    m = n * len(radii)
    return [
        (radii[k % len(radii)] * math.cos(2 * math.pi * k / m - math.pi / 2),
         radii[k % len(radii)] * math.sin(2 * math.pi * k / m - math.pi / 2))
        for k in range(m)
    ]  # fmt: skip


def _shape_mask(name: str, rng: np.random.Generator, size: int, hard: bool) -> np.ndarray:
    """Mask in [0, 1] of one class instance, drawn at the supersampled size."""
    r = rng.uniform(0.18, 0.34) * size * (0.85 if hard else 1.0)
    cx = rng.uniform(r + 2, size - r - 2)
    cy = rng.uniform(r + 2, size - r - 2)
    tilt = math.radians(rng.uniform(-15, 15))
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    box = lambda rr, dx=0.0: (cx + dx - rr, cy - rr, cx + dx + rr, cy + rr)  # noqa: E731
    if name == "circle":
        d.ellipse(box(r), fill=255)
    elif name == "ring":
        d.ellipse(box(r), fill=255)
        d.ellipse(box(r * rng.uniform(0.5, 0.7)), fill=0)
    elif name == "crescent":
        d.ellipse(box(r), fill=255)
        dx = r * rng.uniform(0.45, 0.7) * rng.choice([-1.0, 1.0])
        d.ellipse(box(r * rng.uniform(0.85, 1.0), dx), fill=0)
        img = img.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR, center=(cx, cy))
    elif name == "square":
        d.polygon(_rotated([(-1, -1), (1, -1), (1, 1), (-1, 1)], cx, cy, r * 0.8, tilt), fill=255)
    elif name == "triangle":
        d.polygon(_rotated(_regular(3), cx, cy, r * 1.1, rng.uniform(0, 2 * math.pi)), fill=255)
    elif name == "hexagon":
        d.polygon(_rotated(_regular(6), cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=255)
    elif name == "star":
        star = _regular(5, rng.uniform(0.38, 0.5))
        d.polygon(_rotated(star, cx, cy, r * 1.1, rng.uniform(0, 2 * math.pi)), fill=255)
    elif name == "cross":
        t = rng.uniform(0.28, 0.4)
        for arm in ([(-1, -t), (1, -t), (1, t), (-1, t)], [(-t, -1), (t, -1), (t, 1), (-t, 1)]):
            d.polygon(_rotated(arm, cx, cy, r, tilt), fill=255)
    else:
        return _texture_mask(name, rng, size, tilt)
    return np.asarray(img, dtype=np.float64) / 255.0


def _texture_mask(name: str, rng: np.random.Generator, size: int, tilt: float) -> np.ndarray:
    """Stripes, checkerboard or dots filling a random rectangular patch."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    u = xx * math.cos(tilt) + yy * math.sin(tilt)
    v = -xx * math.sin(tilt) + yy * math.cos(tilt)
    period = rng.uniform(0.09, 0.16) * size
    pu, pv = (u / period + rng.random()) % 1.0, (v / period + rng.random()) % 1.0
    duty = rng.uniform(0.4, 0.6)
    if name == "stripes_h":
        mask = pv < duty
    elif name == "stripes_v":
        mask = pu < duty
    elif name == "checker":
        mask = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif name == "dots":
        rad = rng.uniform(0.25, 0.38)
        mask = (pu - 0.5) ** 2 + (pv - 0.5) ** 2 < rad**2
    else:
        raise ValueError(f"unknown class {name!r}")
    w, h = rng.uniform(0.5, 0.9, size=2) * size
    x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
    patch = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
    return (mask & patch).astype(np.float64)


def _distractor(rng: np.random.Generator, size: int) -> np.ndarray:
    """A thin random line: clutter that belongs to no class."""
    img = Image.new("L", (size, size), 0)
    pts = [tuple(rng.uniform(0, size, 2)) for _ in range(2)]
    ImageDraw.Draw(img).line(pts, fill=255, width=max(1, size // 48))
    return np.asarray(img, dtype=np.float64) / 255.0


def _downsample(mask: np.ndarray) -> np.ndarray:
    """Box-filter a supersampled mask back to the native size (anti-aliased edges)."""
    n = mask.shape[0] // _SS
    return mask.reshape(n, _SS, n, _SS).mean(axis=(1, 3))[..., None]


def render(name: str, rng: np.random.Generator, image_size: int, *, hard: bool = False) -> np.ndarray:
    """One image of class ``name`` as (image_size, image_size, 3) uint8 RGB."""
    bg = _background(rng, image_size)
    bg_mean = bg.mean(axis=(0, 1))
    fg = _foreground(rng, bg_mean)
    if hard:  # pull the foreground towards the background: low contrast
        fg = bg_mean + (fg - bg_mean) * rng.uniform(0.25, 0.45)
    mask = _downsample(_shape_mask(name, rng, image_size * _SS, hard))
    img = bg * (1 - mask) + fg * mask
    if rng.random() < 0.5:
        line = _downsample(_distractor(rng, image_size * _SS)) * rng.uniform(0.3, 0.7)
        img = img * (1 - line) + _colour(rng) * line
    sigma = rng.uniform(10, 18) if hard else rng.uniform(0, 6)
    img = img + rng.normal(0, sigma, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _write(arr: np.ndarray, path: Path) -> None:
    img = Image.fromarray(arr)  # HxWx3 uint8 -> RGB
    if path.suffix == ".jpg":
        img.save(path, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)
    else:
        img.save(path, format="PNG", compress_level=6)


def make_dataset(
    root: Path,
    *,
    seed: int = 0,
    train_per_class: int = 200,
    val_per_class: int = 50,
    image_size: int = 112,
    on_image=None,
) -> None:
    """Write the dataset to ``root`` atomically (temp dir beside it, then rename).

    An existing ``root`` is replaced only once the new dataset is complete. ``on_image``
    (optional) is called once per written image, e.g. to advance a progress bar.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    counts = {"train": train_per_class, "val": val_per_class, "val_hard": val_per_class}
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split, n in counts.items():
            for ci, name in enumerate(CLASS_NAMES):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for i in range(n):
                    rng = np.random.default_rng([seed, SPLITS[split], ci, i])
                    ext = ".jpg" if i % 5 == 4 else ".png"
                    arr = render(name, rng, image_size, hard=split == "val_hard")
                    _write(arr, folder / f"{name}_{i}{ext}")
                    if on_image is not None:
                        on_image()
        meta = {
            "version": DATASET_VERSION,
            "seed": seed,
            "image_size": image_size,
            "per_class": counts,
            "classes": list(CLASS_NAMES),
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        _swap_in(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, root: Path) -> None:
    """Rename tmp to root; an old root is moved aside first and deleted after."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.rename(root, old / "d")
    os.rename(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
