"""Bad input that can be known before the work starts fails before it starts: a target whose
backend is not installed (before the model loads), and an ignored_scope entry that names no layer
of the model (once it is loaded, before any target converts). One line, exit 2, nothing written."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from xception_edge import backends, pipeline
from xception_edge.cli import cli
from xception_edge.errors import BackendUnavailable, BadInput
from xception_edge.targets import builtin_dir

SCOPED = {"litert": "arm64-litert-int8", "openvino": "x86-openvino-int8", "onnxruntime": "x86-onnxruntime-int8"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(r) -> str:
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.output
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture
def no_conversion(monkeypatch):
    """Fails the test if any target starts converting."""
    started = []

    def converter_for(backend):
        started.append(backend)
        raise AssertionError(f"a {backend} conversion started")

    monkeypatch.setattr(pipeline, "converter_for", converter_for)
    return started


def scoped_profile(tmp_path: Path, target: str, scope: list[str]) -> Path:
    """A built-in int8 profile under another name, with an ignored_scope."""
    text = (builtin_dir() / f"{target}.toml").read_text()
    assert f'name = "{target}"' in text and "[quantization]\n" in text
    name = f"{target}-scoped"
    text = text.replace(f'name = "{target}"', f'name = "{name}"')
    text = "\n".join(line for line in text.splitlines() if not line.startswith("ignored_scope"))
    quoted = ", ".join(f'"{s}"' for s in scope)
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace("[quantization]\n", f"[quantization]\nignored_scope = [{quoted}]\n"))
    return path


@pytest.mark.parametrize("backend", sorted(SCOPED))
def test_an_unknown_ignored_scope_name_fails_before_any_target_converts(small_model, tmp_path, no_conversion, backend):
    model, train, val = small_model
    profile = scoped_profile(tmp_path, SCOPED[backend], ["block2_sepconv9"])
    out = tmp_path / "out"
    # a good target first: nothing may be written for it either
    r = invoke(
        "convert", "--model", model, "--target", "litert-fp32", "--target", profile,
        "--calibration", train, "--verify-data", val, "--out", out,
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    line = error_line(r)
    assert f"{SCOPED[backend]}-scoped" in line and "'block2_sepconv9' is not a layer" in line
    assert "block2_sepconv1" in line  # the close match
    assert no_conversion == [] and not out.exists()


def test_a_layer_the_backend_cannot_keep_in_float_fails_before_converting(small_model, tmp_path, no_conversion):
    """OpenVINO keeps only weighted layers in float: a Keras Add layer is refused up front."""
    model, train, _ = small_model
    profile = scoped_profile(tmp_path, "x86-openvino-int8", ["block2_sepconv1", "block2_add"])
    r = invoke("convert", "--model", model, "--target", profile, "--calibration", train, "--no-verify", "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    line = error_line(r)
    assert "'block2_add' is a Keras Add layer, which has no weights" in line and "block2_sepconv2" in line
    assert no_conversion == [] and not (tmp_path / "o").exists()


def test_an_ignored_scope_of_a_precision_that_does_not_use_it_is_not_checked(small_model, tmp_path):
    from xception_edge import scope
    from xception_edge.model_io import load_source
    from xception_edge.targets import load_profile

    src = load_source(str(small_model[0]))
    fp32 = tmp_path / "ov-fp32.toml"
    fp32.write_text(
        'name = "ov-fp32"\nbackend = "openvino"\nformat = "openvino-ir"\nprecision = "fp32"\n'
        '[quantization]\nignored_scope = ["nothing"]\n'
    )
    scope.check(load_profile(fp32), src, backends.get("openvino"))  # no error
    native = scoped_profile(tmp_path, "x86-openvino-int8", ["Softmax_123", "block2_sepconv2/pointwise", "predictions"])
    scope.check(load_profile(native), src, backends.get("openvino"))  # op names: checked after converting
    tflite = scoped_profile(tmp_path, "arm64-litert-int8", ["Softmax_123"])
    with pytest.raises(BadInput, match="'Softmax_123' is not a layer .*or TFLite tensor names"):
        scope.check(load_profile(tflite), src, backends.get("litert"))


def test_a_missing_converter_package_fails_before_the_model_loads(tmp_path, monkeypatch, image_folder):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    monkeypatch.setattr(pipeline, "load_source", lambda *a, **k: pytest.fail("the model was loaded"))
    r = invoke(
        "convert", "--model", tmp_path / "absent.keras", "--target", "openvino-fp32", "--target", "x86-openvino-int8",
        "--calibration", image_folder, "--out", tmp_path / "out",
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    line = error_line(r)
    assert "x86-openvino-int8" in line and "nncf is not installed" in line and "pip install 'xception-edge[convert]'" in line
    assert not (tmp_path / "out").exists()
    # fp32 does not quantize: it needs no nncf
    pipeline.check_installed([pipeline.resolve_targets(("openvino-fp32",))[0]])


def test_a_registered_backend_whose_package_is_missing_is_named_with_its_extra(tmp_path, monkeypatch, image_folder):
    spec = dataclasses.replace(
        backends.get("onnxruntime"), convert_requires=(("no_such_module_for_xe", "onnxruntime"),), quantize_requires=()
    )
    monkeypatch.setitem(backends.registry(), "onnxruntime", spec)
    req = pipeline.ConvertRequest(
        model="absent.keras", targets=("onnxruntime-fp32",), out=tmp_path / "out", calibration=image_folder
    )
    with pytest.raises(BackendUnavailable) as exc:
        pipeline.precheck(req)
    assert str(exc.value) == (
        "target onnxruntime-fp32 (onnxruntime backend): no_such_module_for_xe is not installed; "
        "install it with: pip install 'xception-edge[onnxruntime]'"
    )
    assert exc.value.exit_code == 2
