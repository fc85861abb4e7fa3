"""Property-based tests of the files a user (or an attacker) hands us: images, calibration and
labelled list files, target profiles (TOML, and the profile record of a manifest). Whatever the
bytes, the answer is the documented one (UndecodableImage for an image, BadInput for the rest)
or a valid result: never another exception."""

import dataclasses
import io
import json
import math
import re
import struct
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import write_images
from xception_edge.calibration import open_source
from xception_edge.dataset import labelled_images
from xception_edge.errors import BadInput
from xception_edge.preprocess import PreprocessSpec, UndecodableImage, load_image
from xception_edge.targets import builtin_dir, builtin_names, load_profile, profile_from_dict
from xception_edge.profiles import GateSpec, QuantSpec, TargetProfile, VerifySpec

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

# ---------------------------------------------------------------- images

SPEC = PreprocessSpec(16, 16)


def _encoded(fmt: str, mode: str = "RGB", **kw) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


_ROTATED = Image.Exif()
_ROTATED[0x0112] = 6
SEEDS = [
    _encoded("PNG"),
    _encoded("PNG", "P"),
    _encoded("PNG", "LA"),
    _encoded("PNG", "I;16"),
    _encoded("PNG", "1"),
    _encoded("JPEG"),
    _encoded("JPEG", "L", exif=_ROTATED),
    _encoded("JPEG", "CMYK"),
    _encoded("BMP"),
    _encoded("BMP", "P"),
    _encoded("WEBP"),
    _encoded("WEBP", "RGBA", lossless=True),
]
# A DDS header with pixel-format flags Pillow does not know: NotImplementedError escaped decode().
DDS_UNKNOWN_FORMAT = (
    b"DDS " + struct.pack("<7I", 124, 0x100F, 8, 8, 32, 0, 0) + bytes(44) + struct.pack("<2I", 32, 0) + bytes(296)
)


@st.composite
def mutated_images(draw) -> bytes:
    """A valid PNG/JPEG/BMP/WebP file with bytes replaced, inserted, deleted or cut off."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op, pos = draw(st.integers(0, 3)), draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(max_size=16))
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def png_headers(draw) -> bytes:
    """A PNG whose (checksummed) header claims any size, bit depth and colour type."""
    side = st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1))
    ihdr = struct.pack(
        ">IIBBBBB",
        draw(side),
        draw(side),
        draw(st.sampled_from([0, 1, 2, 4, 8, 16])),
        draw(st.sampled_from([0, 1, 2, 3, 4, 6, 7])),
        0,
        0,
        draw(st.integers(0, 1)),
    )
    body = draw(st.binary(max_size=64))
    idat = zlib.compress(body) if draw(st.booleans()) else body
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::UserWarning:PIL", "ignore::PIL.Image.DecompressionBombWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@example(DDS_UNKNOWN_FORMAT)
@given(st.one_of(st.binary(max_size=512), mutated_images(), png_headers()))
def test_the_decoder_returns_a_model_input_or_raises_undecodable_image(data):
    try:
        x = load_image(io.BytesIO(data), SPEC)
    except UndecodableImage as exc:
        assert "\n" not in str(exc)
        return
    assert x.shape == (16, 16, 3) and x.dtype == np.float32
    assert np.isfinite(x).all() and np.abs(x).max() <= 1.0


# ---------------------------------------------------------------- list files


@pytest.fixture(scope="module")
def list_root(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("lists") / "root", classes=("a", "b", "c"), per_class=2, size=(8, 8))


KNOWN = st.sampled_from(["a/a_000.png", "a/a_001.png", "b/b_000.png", "c/c_001.png", "a/./a_000.png", "b/../a/a_001.png"])
LABELS = ["a", "b", "c"]
LINES = st.one_of(
    KNOWN,
    st.sampled_from(
        [
            "",
            "# comment",
            "../outside.png",
            "/etc/passwd",
            "a",
            "a/",
            ".",
            "..",
            "a/missing.png",
            "a/a_000.png a",
            "a/a_000.png 2",
            "a/a_000.png 99",
            "a/a_000.png \u00b2",
            "a/a_000.png \u0661",
            "a/a_000.png " + "9" * 5000,
            "a\x00b",
            "a/a_000.png\x00",
            "c/c_001.png b extra",
        ]
    ),
    st.builds(lambda p, label: f"{p} {label}", KNOWN, st.one_of(st.sampled_from(LABELS), st.text(max_size=12))),
    st.builds(
        lambda h, p: f"{h}  {p}",
        st.text("0123456789abcdefABCDEF", min_size=63, max_size=65),
        st.one_of(KNOWN, st.text(max_size=20)),
    ),
    st.builds("/".join, st.lists(st.sampled_from(["..", ".", "a", "b", "", "~", "x" * 300, "a_000.png", "\u00e9"]), max_size=8)),
    st.builds(lambda n: "x" * n, st.integers(200, 5000)),
    st.text(max_size=40),
)


LISTS = st.one_of(
    st.lists(st.one_of(KNOWN, st.sampled_from(["", "# comment", "  a/a_001.png  "])), min_size=1, max_size=8),  # mostly fine
    st.lists(
        st.builds(lambda p, label: f"{p} {label}", KNOWN, st.sampled_from(LABELS + ["0", "2", "3"])), min_size=1, max_size=8
    ),
    st.lists(LINES, max_size=8),
    st.binary(max_size=200),
)


def _write_list(root: Path, lines) -> Path:
    path = root / "list.txt"
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    return path


@FAST
@example(["a\x00b"])
@given(LISTS)
def test_calibration_lists_give_a_source_or_bad_input(list_root, lines):
    lst = _write_list(list_root, lines)
    try:
        src = open_source(lst, list_root)
    except BadInput as exc:
        assert "\n" not in str(exc)
        return
    root = list_root.resolve()
    assert src.files and len(set(src.files)) == len(src.files)
    assert all(f.is_file() and f.is_relative_to(root) for f in src.files)
    assert len(src.expected_sha256) == len(src.files)


@FAST
@example(["a/a_000.png \u00b2"])
@example(["a\x00b"])
@given(LISTS)
def test_labelled_lists_give_labelled_images_or_bad_input(list_root, lines):
    lst = _write_list(list_root, lines)
    try:
        data = labelled_images(lst, LABELS)
    except BadInput as exc:
        assert "\n" not in str(exc)
        return
    assert data.files and len(set(data.files)) == len(data.files) == len(data.targets)
    assert all(t is None or 0 <= t < len(LABELS) for t in data.targets)


# ---------------------------------------------------------------- target profiles

_CHARS = st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",))
SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 3.5, 1e300, 2**31, "int8", "uint8", "litert", "tflite", "fp32", "int8", "../x", ""]),
    st.text(_CHARS, max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(_CHARS, max_size=8), inner, max_size=3),
    max_leaves=8,
)
_KEYS = sorted({f.name for cls in (TargetProfile, QuantSpec, VerifySpec, GateSpec) for f in dataclasses.fields(cls)})
KEYS = st.one_of(st.sampled_from(_KEYS), st.text(_CHARS, max_size=8))
_SECTIONS = {"quantization": QuantSpec, "verify": VerifySpec, "gates": GateSpec}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def _toml(data: dict) -> str:
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in data.items())


@st.composite
def mutated_profiles(draw) -> dict:
    """A built-in profile with keys set to random values (top level or in a section) or removed."""
    data = tomllib.loads((builtin_dir() / f"{draw(st.sampled_from(builtin_names()))}.toml").read_text())
    for _ in range(draw(st.integers(1, 4))):
        table, cls = data, TargetProfile
        section = draw(st.sampled_from([None, "quantization", "verify", "gates"]))
        if section is not None and isinstance(data.get(section, {}), dict):
            table, cls = data.setdefault(section, {}), _SECTIONS[section]
        known = st.sampled_from(sorted(f.name for f in dataclasses.fields(cls)))
        key = draw(st.one_of(known, known, known, KEYS))
        if draw(st.integers(0, 4)) == 0:
            table.pop(key, None)
        else:
            table[key] = draw(VALUES)
    return data


def _check_valid(p) -> None:
    """A profile that loads is one the rest of the toolkit can trust."""
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", p.name)
    for part in (p, p.quantization, p.verify, p.gates):
        for f in dataclasses.fields(part):
            v = getattr(part, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                assert math.isfinite(v) and v >= 0, (f.name, v)
                if str(f.type).startswith("int"):
                    assert isinstance(v, int) and v < 2**31, (f.name, v)
    again = profile_from_dict(json.loads(json.dumps(p.to_dict())), "manifest.json")
    assert again == p


@FAST
@example({**tomllib.loads((builtin_dir() / "litert-fp32.toml").read_text()), "gates": {"max_top1_drop_pp": math.nan}})
@given(st.one_of(mutated_profiles(), st.dictionaries(KEYS, VALUES, max_size=6)))
def test_profile_files_give_a_valid_profile_or_bad_input(tmp_path_factory, data):
    f = tmp_path_factory.getbasetemp() / "fuzz.toml"
    f.write_text(_toml(data), encoding="utf-8")
    try:
        p = load_profile(f)
    except BadInput as exc:
        assert "\n" not in str(exc)
        return
    _check_valid(p)


@FAST
@example([1, 2])
@example({"name": "x", "backend": "litert", "format": "tflite", "precision": "fp32", "threads": 10**30})
@given(
    st.one_of(
        mutated_profiles(),
        st.dictionaries(KEYS, VALUES, max_size=6),
        VALUES,
        st.builds(lambda d, n: {**d, "calibration_size": n}, mutated_profiles(), st.integers(2**62, 2**80)),
    )
)
def test_manifest_profile_records_give_a_valid_profile_or_bad_input(data):
    try:
        p = profile_from_dict(data, "manifest.json")
    except BadInput as exc:
        assert "\n" not in str(exc)
        return
    _check_valid(p)
