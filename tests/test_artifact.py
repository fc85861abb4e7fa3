import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from xception_edge.artifact import read_manifest, staged_dir, write_manifest
from xception_edge.errors import BadInput


def test_staged_dir_renames_into_place_and_refuses_overwrite(tmp_path):
    final = tmp_path / "t"
    with staged_dir(final, force=False) as stage:
        (stage / "model.bin").write_bytes(b"abc")
        write_manifest(stage, {"target": "t"})
    assert (final / "model.bin").read_bytes() == b"abc"
    with pytest.raises(BadInput, match="--force"):
        with staged_dir(final, force=False):
            pass
    with staged_dir(final, force=True) as stage:
        (stage / "model.bin").write_bytes(b"new")
        write_manifest(stage, {"target": "t"})
    assert (final / "model.bin").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_failure_inside_leaves_nothing_and_keeps_the_old_artifact(tmp_path):
    final = tmp_path / "t"
    with pytest.raises(RuntimeError):
        with staged_dir(final, force=False) as stage:
            (stage / "half").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    final.mkdir()
    (final / "keep").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(final, force=True) as stage:
            raise KeyboardInterrupt
    assert (final / "keep").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t"]


def test_killed_process_leaves_no_artifact_folder(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal, time
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell starts us with SIGINT ignored
        from xception_edge.artifact import staged_dir
        with staged_dir(__import__('pathlib').Path({str(tmp_path / "out")!r}), force=False) as s:
            (s / 'model.tflite').write_bytes(b'x' * 100)
            print('ready', flush=True)
            time.sleep(30)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    p.wait(timeout=20)
    assert not (tmp_path / "out").exists()
    assert [x.name for x in tmp_path.iterdir() if not x.name.startswith(".xe-tmp-")] == []
    assert list(tmp_path.iterdir()) == []


def _manifest_fields(**over) -> dict:
    base = {
        "target": "a",
        "backend": "onnxruntime",
        "format": "onnx",
        "precision": "fp32",
        "model_file": "model.onnx",
        "threads": 2,
        "labels": ["x", "y"],
        "io": {
            "input": {"name": "in", "dtype": "float32", "shape": [1, 71, 71, 3], "scale": 0.0, "zero_point": 0},
            "output": {"name": "out", "dtype": "float32", "shape": [1, 2], "scale": 0.0, "zero_point": 0},
        },
        "preprocessing": {
            "height": 71,
            "width": 71,
            "resize": "resize",
            "crop_fraction": 0.875,
            "interpolation": "bilinear",
            "scaling": "xception",
            "layout": "NHWC",
            "channels": "RGB",
        },
    }
    base.update(over)
    return base


def _artifact(tmp_path, name="a", **over):
    d = tmp_path / name
    d.mkdir()
    (d / "model.onnx").write_bytes(b"weights")
    return d, write_manifest(d, _manifest_fields(**over))


def test_manifest_checks_sha256_and_missing_files(tmp_path):
    d, m = _artifact(tmp_path)
    assert m["files"]["model.onnx"]["bytes"] == 7
    assert read_manifest(d).target == "a"
    (d / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(BadInput, match="does not match its sha256"):
        read_manifest(d)
    os.remove(d / "model.onnx")
    with pytest.raises(BadInput, match="is missing"):
        read_manifest(d)
    with pytest.raises(BadInput, match="no manifest.json"):
        read_manifest(tmp_path)
    (d / "manifest.json").write_text(json.dumps({"schema": "xception-edge/manifest", "schema_version": 99}))
    with pytest.raises(BadInput, match="schema version 99"):
        read_manifest(d)


def _rewrite(d, edit):
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda m: m.pop("files"), "'files' must be"),
        (lambda m: m.update(files={}), "'files' must be"),
        (lambda m: m.update(files=[["model.onnx", "x"]]), "'files' must be"),
        (lambda m: m["files"]["model.onnx"].pop("sha256"), "sha256"),
        (lambda m: m["files"].update({"model.onnx": "abc"}), "sha256"),
        (lambda m: m.update(model_file="../other.onnx"), "outside"),
        (lambda m: m.update(model_file="/etc/passwd"), "outside"),
        (lambda m: m.update(model_file="labels.txt"), "not listed"),
        (lambda m: m.update(io=None), "'io' must be"),
        (lambda m: m["io"].update(input=None), "'io.input' must be"),
        (lambda m: m["io"]["output"].update(dtype="int4"), "io.output.dtype"),
        (lambda m: m["io"]["input"].update(dtype="int8", scale=0.0), "io.input.scale"),
        (lambda m: m["io"]["input"].update(dtype="int8", scale=10**400), "io.input.scale"),
        (lambda m: m["io"]["input"].update(shape="1x71"), "io.input.shape"),
        (lambda m: m.update(labels=None), "'labels' must be"),
        (lambda m: m.update(labels=[1, 2]), "'labels' must be"),
        (lambda m: m.update(preprocessing=[]), "'preprocessing' must be"),
        (lambda m: m["preprocessing"].update(height="71"), "preprocessing.height"),
        (lambda m: m["preprocessing"].update(resize="stretch"), "resize"),
        (lambda m: m.update(target="../victim"), "not a plain name"),
        (lambda m: m.update(threads=0), "'threads' must be"),
        (lambda m: m.update(precision="int4"), "'precision' must be"),
        (lambda m: m.update(profile=[]), "'profile' must be a table"),
    ],
)
def test_malformed_manifest_is_one_line_bad_input(tmp_path, edit, needle):
    """Every malformed entry is a BadInput naming the manifest, never an AttributeError/KeyError/TypeError."""
    d, _ = _artifact(tmp_path)
    _rewrite(d, edit)
    with pytest.raises(BadInput, match=needle) as info:
        read_manifest(d)
    assert "manifest.json" in str(info.value) and "\n" not in str(info.value)


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path):
    d, _ = _artifact(tmp_path)
    (d / "model.bin").write_bytes(b"smuggled")
    with pytest.raises(BadInput, match="does not list: model.bin"):
        read_manifest(d)


def test_openvino_weights_file_must_be_listed(tmp_path):
    d = tmp_path / "ov"
    d.mkdir()
    (d / "model.xml").write_text("<net/>")
    m = write_manifest(d, _manifest_fields(backend="openvino", format="openvino-ir", model_file="model.xml"))
    assert set(m["files"]) == {"model.xml"}
    with pytest.raises(BadInput, match="model.bin is used by the artifact but not listed"):
        read_manifest(d)


def test_a_model_file_is_not_a_folder(tmp_path):
    d, _ = _artifact(tmp_path)
    with pytest.raises(BadInput, match="pass the artifact folder"):
        read_manifest(d / "model.onnx")


# ---------------------------------------------------------------- property-based: any manifest
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_paths = st.sampled_from(
    [
        (),
        ("files",),
        ("files", "model.onnx"),
        ("files", "model.onnx", "sha256"),
        ("files", "model.onnx", "bytes"),
        ("io",),
        ("io", "input"),
        ("io", "input", "shape"),
        ("io", "input", "scale"),
        ("io", "output", "dtype"),
        ("model_file",),
        ("labels",),
        ("preprocessing",),
        ("preprocessing", "height"),
        ("preprocessing", "crop_fraction"),
        ("target",),
        ("backend",),
        ("precision",),
        ("threads",),
        ("profile",),
        ("schema_version",),
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=_paths, value=_json, key=st.text(max_size=10))
def test_any_manifest_reads_or_is_bad_input(tmp_path_factory, path, value, key):
    """A manifest with any JSON value put anywhere the reader looks: it reads, or it is BadInput."""
    d, _ = _artifact(tmp_path_factory.mktemp("m"))
    m = json.loads((d / "manifest.json").read_text())
    node = m
    for part in path[:-1]:
        node = node[part]
    if path:
        node[path[-1]] = value
    else:
        m[key] = value
    (d / "manifest.json").write_text(json.dumps(m))
    try:
        read_manifest(d)
    except BadInput as exc:
        assert "\n" not in str(exc)
