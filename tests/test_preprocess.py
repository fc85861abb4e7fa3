import io

import numpy as np
import pytest
from PIL import Image

from xception_edge.preprocess import (
    PreprocessSpec,
    UndecodableImage,
    decode,
    load_image,
    load_images,
    preprocess_array,
    resize_bilinear,
    scale,
    to_rgb,
)
from xception_edge.errors import BadInput


def test_scaling_equals_keras_xception_preprocess_input():
    from keras.applications.xception import preprocess_input

    x = np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1).repeat(3, -1)
    np.testing.assert_allclose(scale(x), np.asarray(preprocess_input(x.copy())), atol=1e-6)
    assert scale(np.array([0.0, 255.0])).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize(
    "src,dst", [((37, 53), (71, 71)), ((300, 200), (96, 96)), ((1000, 777), (299, 299)), ((96, 96), (96, 96))]
)
def test_bilinear_resize_matches_tf_image_resize(src, dst):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, src + (3,), dtype=np.uint8)
    ours = resize_bilinear(img, *dst)
    theirs = tf.image.resize(img.astype(np.float32), dst, method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_default_pipeline_matches_keras_image_dataset_from_directory(tmp_path):
    import keras

    rng = np.random.default_rng(2)
    d = tmp_path / "ds" / "only"
    d.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (123, 211, 3), dtype=np.uint8)).save(d / "x.png")
    ds = keras.utils.image_dataset_from_directory(
        tmp_path / "ds", image_size=(71, 71), batch_size=1, shuffle=False, verbose=False
    )
    keras_x = next(iter(ds))[0].numpy()[0]
    ours = load_image(d / "x.png", PreprocessSpec(71, 71))
    np.testing.assert_allclose(ours, keras_x / 127.5 - 1, atol=1e-4)


def _roundtrip(img: Image.Image, fmt: str, **kw) -> io.BytesIO:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "WEBP"])
def test_decodes_common_formats(fmt):
    img = Image.new("RGB", (20, 10), (200, 30, 40))
    arr = decode(_roundtrip(img, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})))
    assert arr.shape == (10, 20, 3) and arr.dtype == np.uint8
    assert abs(int(arr[5, 10, 0]) - 200) < 8 and abs(int(arr[5, 10, 1]) - 30) < 8


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 5, 10))  # white strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    arr = decode(_roundtrip(img, "JPEG", exif=exif, quality=95))
    assert arr.shape == (30, 10, 3)  # portrait after orientation
    assert arr[:5].mean() > 200 and arr[-5:].mean() < 50  # the left strip is now on top


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1", "PA"])
def test_every_mode_becomes_rgb(mode):
    base = Image.new("RGB", (8, 8), (128, 128, 128))
    if mode == "I;16":
        img = Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16))  # 128 * 257
        assert img.mode.startswith("I;16")
    elif mode == "F":
        img = Image.fromarray(np.full((8, 8), 128.0, dtype=np.float32))
    elif mode == "I":
        img = Image.fromarray(np.full((8, 8), 128, dtype=np.int32))
    else:
        img = base.convert(mode)
    out = np.asarray(to_rgb(img))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    if mode not in ("1", "CMYK"):
        assert abs(int(out.mean()) - 128) <= 2, (mode, out.mean())


def test_crop_mode_takes_the_centre():
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, 75:125] = 255  # a white vertical band in the centre
    out = preprocess_array(arr, PreprocessSpec(80, 80, resize="crop", crop_fraction=1.0))
    assert out.shape == (80, 80, 3)
    # shorter side 100 -> 80 (ratio 0.8): the band spans x 60..100 of 160, crop keeps x 40..120
    assert out[:, 25:55].min() > 0.99 and out[:, :15].max() < -0.99
    plain = preprocess_array(arr, PreprocessSpec(80, 80))
    assert plain[:, 31:49].min() > 0.99  # plain resize squeezes instead


def test_undecodable_files_are_reported_not_dropped(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (10, 10)).save(good)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    trunc = tmp_path / "trunc.jpg"
    data = _roundtrip(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG").getvalue()
    trunc.write_bytes(data[: len(data) // 2])
    batch, failed = load_images([good, empty, text, trunc], PreprocessSpec(71, 71))
    assert batch.shape == (1, 71, 71, 3)
    assert len(failed) == 3 and any("empty.jpg" in f for f in failed) and any("trunc.jpg" in f for f in failed)
    with pytest.raises(UndecodableImage):
        decode(text)


def test_spec_validation_and_roundtrip():
    spec = PreprocessSpec(96, 80, resize="crop", crop_fraction=0.9)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(BadInput):
        PreprocessSpec(96, 96, resize="stretch")
    with pytest.raises(BadInput, match="unknown keys"):
        PreprocessSpec.from_dict({**spec.to_dict(), "mean": 0.5})


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """9000x5000 (45 megapixels) in one colour: a 1-bit PNG of a few kB."""
    path = tmp_path_factory.mktemp("big") / "huge.png"
    Image.new("1", (9000, 5000), 1).save(path, optimize=True)
    assert path.stat().st_size < 50_000
    return path


@pytest.mark.parametrize("pillow_limit", ["default", None])
def test_images_above_the_pixel_limit_are_refused_before_decoding(huge_png, tmp_path, monkeypatch, pillow_limit):
    from PIL import ImageFile

    import xception_edge.preprocess

    if pillow_limit is None:  # Pillow's own bomb check switched off changes nothing
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    def no_decoding(self, *a, **k):
        raise AssertionError("pixels were decoded")

    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(UndecodableImage, match=r"huge\.png: 9000x5000 is 45\.0 megapixels, above the 40-megapixel limit"):
            decode(huge_png)
    good = tmp_path / "good.png"
    Image.new("RGB", (10, 10)).save(good)
    batch, failed = load_images([huge_png, good], PreprocessSpec(71, 71))
    assert batch.shape == (1, 71, 71, 3) and len(failed) == 1 and "40-megapixel limit" in failed[0]
    assert xception_edge.preprocess.MAX_PIXELS == 40_000_000  # the limit the READMEs document


def test_pillow_decompression_bomb_warning_as_an_error_is_an_undecodable_image(monkeypatch):
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)  # 10x10 = 100 px: Pillow warns (error above 120)
    data = _roundtrip(Image.new("RGB", (10, 10)), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(UndecodableImage, match="DecompressionBombWarning"):
            decode(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 100 px > 2 x 10: Pillow's error
    with pytest.raises(UndecodableImage, match="DecompressionBombError"):
        decode(_roundtrip(Image.new("RGB", (10, 10)), "PNG"))


@pytest.mark.parametrize("fmt", ["TIFF", "GIF", "TGA", "PPM"])
def test_only_jpeg_png_bmp_and_webp_are_decoded(tmp_path, fmt):
    path = tmp_path / "photo.png"  # the suffix does not matter: the content decides
    Image.new("RGB", (12, 9), (200, 30, 40)).save(path, fmt)
    with pytest.raises(UndecodableImage, match=r"photo\.png: not a JPEG, PNG, BMP or WebP image"):
        decode(path)


def test_a_tiny_file_claiming_15000x15000_pixels_costs_nothing(monkeypatch):
    """The reported bomb: a few bytes of PNG header for 225 megapixels, refused before decoding."""
    import struct
    import zlib

    from PIL import ImageFile

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 15000, 15000, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda *a, **k: pytest.fail("pixels were decoded"))
    with pytest.raises(UndecodableImage, match=r"225000000 pixels.*the limit here is 40 megapixels"):
        decode(io.BytesIO(png))  # Pillow's own check (above 179 MP) answers first, named as such
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(UndecodableImage, match=r"15000x15000 is 225\.0 megapixels, above the 40-megapixel limit"):
        decode(io.BytesIO(png))
