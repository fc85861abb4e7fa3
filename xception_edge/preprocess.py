"""The one preprocessing implementation: numpy + Pillow only.

Calibration, verification, evaluation, training of the demo model and the on-device
benchmark all call :func:`load_image` / :func:`load_images` with a :class:`PreprocessSpec`
that travels inside every artifact's manifest, so the device repeats it exactly.

Default pipeline (what ``keras.utils.image_dataset_from_directory`` does):
decode -> EXIF orientation -> RGB -> plain bilinear resize to the model's input size
(TensorFlow's ``tf.image.resize`` semantics: half-pixel centres, no antialiasing)
-> Xception scaling ``x / 127.5 - 1``.
Optional ImageNet style: resize the shorter side to ``size / crop_fraction`` then centre-crop.
"""

from __future__ import annotations

import struct
from pathlib import Path
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadInput
from .records.preprocessing import PreprocessSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The largest image decoded, in pixels (width x height): checked from the header, before any
# pixel is decoded, so a tiny file claiming a huge size costs nothing. Larger ones are skipped
# and listed like undecodable files. Pillow's own decompression-bomb check stays at its default.
MAX_PIXELS = 40_000_000
# What is decoded, recognised by content whatever the file's suffix; other formats are skipped.
DECODED_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")  # JPEG includes multi-picture (MPO) files
# What Pillow raises on a corrupt, truncated or hostile file (found by tests/test_untrusted_inputs.py).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)
# Pillow's own size check, which runs first when opening: its error, or its warning when warnings are errors.
_PILLOW_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


class UndecodableImage(Exception):
    """An image file that Pillow cannot decode; callers skip and list it."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB. Alpha is dropped, as Keras/TF decoders do with channels=3."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit range -> 8-bit range
        if mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0  # float images in [0, 1]
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def check_size(size: tuple[int, int], path) -> None:
    """Refuse an empty image or one above MAX_PIXELS, from its header size."""
    w, h = size
    if w < 1 or h < 1:
        raise UndecodableImage(f"{path}: the image is {w}x{h} pixels (empty)")
    if w * h > MAX_PIXELS:
        raise UndecodableImage(
            f"{path}: {w}x{h} is {w * h / 1e6:.1f} megapixels, above the {MAX_PIXELS / 1e6:g}-megapixel limit; downscale it"
        )


def decode(path: str | Path) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array, EXIF orientation applied.
    Raises UndecodableImage for a file that is not a JPEG, PNG, BMP or WebP image, is
    corrupt or truncated, or is larger than MAX_PIXELS (checked before decoding)."""
    try:
        with Image.open(path, formats=DECODED_FORMATS) as img:
            check_size(img.size, path)
            img = ImageOps.exif_transpose(img)  # decodes the pixels
            img.load()
            return np.asarray(to_rgb(img), dtype=np.uint8)
    except UnidentifiedImageError:
        raise UndecodableImage(f"{path}: not a JPEG, PNG, BMP or WebP image") from None
    except _PILLOW_BOMB as exc:
        raise UndecodableImage(
            f"{path}: {exc.__class__.__name__}: {exc} (the limit here is {MAX_PIXELS / 1e6:g} megapixels)"
        ) from None
    except _DECODE_ERRORS as exc:
        raise UndecodableImage(f"{path}: {exc.__class__.__name__}: {exc}") from None


def _bilinear_axis(in_len: int, out_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights for tf.image.resize(bilinear, half_pixel_centers, no antialias)."""
    scale = np.float32(in_len) / np.float32(out_len)  # float32 arithmetic, as TensorFlow's kernel
    centres = (np.arange(out_len, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(centres)
    frac = centres - floor
    lo = np.clip(floor.astype(np.int64), 0, in_len - 1)
    hi = np.clip(floor.astype(np.int64) + 1, 0, in_len - 1)
    return lo, hi, frac


def resize_bilinear(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWxC array -> height x width x C float32, matching tf.image.resize(method='bilinear')."""
    y0, y1, fy = _bilinear_axis(arr.shape[0], height)
    x0, x1, fx = _bilinear_axis(arr.shape[1], width)
    fy = fy[:, None, None]
    # gather the needed rows before the float32 cast: memory follows the output, not the image
    rows = arr[y0].astype(np.float32) * (1.0 - fy) + arr[y1].astype(np.float32) * fy
    fx = fx[None, :, None]
    return rows[:, x0] * (1.0 - fx) + rows[:, x1] * fx


def _resize(arr: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    if interpolation == "bilinear":
        return resize_bilinear(arr, height, width)
    img = Image.fromarray(arr)
    return np.asarray(img.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def _centre_crop_box(h: int, w: int, out_h: int, out_w: int) -> tuple[int, int]:
    return max(0, (h - out_h) // 2), max(0, (w - out_w) // 2)


def preprocess_array(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxWx3 uint8 RGB -> spec.height x spec.width x 3 float32 model input."""
    if spec.resize == "resize":
        out = _resize(rgb, spec.height, spec.width, spec.interpolation)
    else:
        h, w = rgb.shape[:2]
        short_target = [round(spec.height / spec.crop_fraction), round(spec.width / spec.crop_fraction)]
        ratio = max(short_target[0] / h, short_target[1] / w)
        rh, rw = max(spec.height, round(h * ratio)), max(spec.width, round(w * ratio))
        resized = _resize(rgb, rh, rw, spec.interpolation)
        top, left = _centre_crop_box(rh, rw, spec.height, spec.width)
        out = resized[top : top + spec.height, left : left + spec.width]
    return scale(out, spec.scaling)


def scale(x: np.ndarray, scaling: str = "xception") -> np.ndarray:
    """Pixel values in [0, 255] -> model range. Xception: x / 127.5 - 1 (tf mode)."""
    if scaling != "xception":
        raise BadInput(f"scaling {scaling!r} is unknown")
    return (np.asarray(x, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


def load_image(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """Decode and preprocess one image file. Raises UndecodableImage."""
    return preprocess_array(decode(path), spec)


def load_images(paths: Sequence[str | Path], spec: PreprocessSpec, *, on_progress=None) -> tuple[np.ndarray, list[str]]:
    """Decode + preprocess many files into an (N, H, W, 3) float32 batch.

    Returns the batch of those that decoded and the list of ``"path: reason"`` strings for
    those that did not (callers must report them, never drop them silently).
    """
    out = np.empty((len(paths), spec.height, spec.width, 3), dtype=np.float32)
    failed: list[str] = []
    n = 0
    for i, path in enumerate(paths):
        try:
            out[n] = load_image(path, spec)
            n += 1
        except UndecodableImage as exc:
            failed.append(str(exc))
        if on_progress is not None:
            on_progress(i + 1)
    return out[:n], failed


def list_images(root: str | Path) -> list[Path]:
    """Image files under root, recursively, in sorted order (hidden folders skipped)."""
    root = Path(root)
    found = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            found.append(p)
    return found
