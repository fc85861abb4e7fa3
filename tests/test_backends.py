"""Backend contract tests, parametrized over the one registry (as timm's tests run over
list_models()): a backend added to the registry is tested here without a line more."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xception_edge import backends
from xception_edge.artifact import read_manifest
from xception_edge.cli import cli
from xception_edge.errors import BadInput
from xception_edge.preprocess import list_images, load_images
from xception_edge.runtime import open_artifact
from xception_edge.runtime.base import Runtime
from xception_edge.targets import builtin_names, resolve_target
from xception_edge.profiles import Precision, QuantSpec

ROOT = Path(__file__).resolve().parent.parent
NAMES = backends.names()


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name", NAMES)
def test_the_spec_declares_everything_and_its_entry_points_resolve(name):
    spec = backends.get(name)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert spec.name == name and spec.formats and spec.extra in extras
    assert set(spec.precisions) <= {p.value for p in Precision} and spec.precisions
    assert callable(spec.converter())
    rt = spec.runtime_class()
    assert issubclass(rt, Runtime) and rt.backend == name
    inspector = spec.inspector()
    assert callable(inspector.measure) and isinstance(inspector.TOOL, str) and inspector.TOOL
    own = spec.accuracy()
    assert own is None or callable(own.try_accuracy_control)
    native = spec.native_benchmark()
    assert native is None or (callable(native.latency) and isinstance(native.TOOL, str) and native.TOOL)
    assert set(spec.settings) <= {f.name for f in dataclasses.fields(QuantSpec)}


def test_the_registry_imports_no_framework():
    code = (
        "import sys; from xception_edge import backends; specs = backends.registry(); "
        "print(len(specs), ' '.join(m for m in ('tensorflow','keras','openvino','onnxruntime','nncf','tf2onnx',"
        "'ai_edge_litert') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(NAMES))]


def test_every_builtin_target_has_a_registered_backend_and_every_backend_a_target():
    used = {resolve_target(n).backend for n in builtin_names()}
    assert used == set(NAMES)


def test_an_unknown_backend_is_one_line_naming_the_known_ones(tmp_path):
    prof = tmp_path / "t.toml"
    prof.write_text('name = "t"\nbackend = "tensorrt"\nformat = "engine"\nprecision = "fp32"\n')
    with pytest.raises(BadInput, match="backend 'tensorrt' is not one of: litert, openvino, onnxruntime"):
        resolve_target(str(prof))


@pytest.mark.parametrize("name", NAMES)
def test_each_backends_artifacts_open_with_its_runtime_and_agree_with_keras(converted_all, name):
    """Every built-in target of this backend, from the one shared conversion."""
    import keras

    out, payload, (model, _, val) = converted_all
    results = {x["target"]: x for x in payload["results"]}
    targets = [n for n in builtin_names() if resolve_target(n).backend == name]
    files = list_images(val)
    for target in targets:
        manifest = read_manifest(out / target)
        assert manifest.backend == name and manifest.format in backends.get(name).formats
        rt = open_artifact(out / target)
        assert type(rt) is backends.get(name).runtime_class()
        x, _ = load_images(files, manifest.preprocessing)
        probs = rt.predict(x)
        ref = keras.models.load_model(model).predict(x, verbose=0)
        assert probs.shape == ref.shape and np.allclose(probs.sum(-1), 1.0, atol=0.05)
        agreement = float(np.mean(probs.argmax(-1) == ref.argmax(-1)))
        assert agreement >= resolve_target(target).verify.min_agreement - 0.1, (target, agreement)
        assert results[target]["verification"]["passed"] is True


def test_a_fourth_backend_is_one_package_and_one_registry_line(small_model, tmp_path):
    """tests/example_backend wraps ONNX Runtime under another name. Registering it is the one
    line; nothing in xception_edge names it, yet convert, bench, evaluate and inspect find it."""
    assert not any("example" in p.read_text() for p in (ROOT / "xception_edge").rglob("*.py") if "backends" in p.parts)
    model, train, val = small_model
    spec = backends.register("example_backend")
    try:
        assert spec.name == "example-ort" and "example-ort" in backends.names()
        # the spec's optional entries default to "none": no vendor benchmark tool, no settings of its own,
        # so onnxruntime's own x86_without_vnni is refused for it as for any other backend
        assert spec.native_benchmark() is None and spec.settings == ()
        prof = tmp_path / "vnni.toml"
        prof.write_text(
            'name = "v"\nbackend = "example-ort"\nformat = "onnx"\nprecision = "int8"\n[quantization]\nx86_without_vnni = true\n'
        )
        with pytest.raises(BadInput, match="x86_without_vnni is an onnxruntime setting; remove it for backend example-ort"):
            resolve_target(str(prof))
        profiles = []
        for precision in ("fp32", "int8"):
            prof = tmp_path / f"example-{precision}.toml"
            prof.write_text(
                f'name = "example-{precision}"\nbackend = "example-ort"\nformat = "onnx"\n'
                f'precision = "{precision}"\n[quantization]\nactivation_dtype = "uint8"\nreduce_range = true\n'
            )
            profiles += ["--target", prof]
        out = tmp_path / "out"
        r = run(
            "convert",
            "--model",
            model,
            *profiles,
            "--calibration",
            train,
            "--num-calibration",
            40,
            "--verify-data",
            val,
            "--out",
            out,
        )
        assert r.exit_code == 0, r.output
        assert read_manifest(out / "example-int8").backend == "example-ort"
        r = run("bench", out / "example-int8", "--runs", 3, "--warmup", 1, "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["artifact"]["backend"] == "example-ort"
        r = run(
            "evaluate",
            "--model",
            model,
            "--artifacts",
            out,
            "--data",
            val,
            "--report",
            tmp_path / "rep",
            "--runs",
            2,
            "--warmup",
            0,
            "--json",
        )
        assert r.exit_code == 0, r.output
        rows = {x["name"]: x for x in json.loads(r.stdout)["artifacts"]}
        assert rows["example-fp32"]["agreement"] == 1.0 and rows["example-int8"]["agreement"] >= 0.8
        r = run(
            "inspect", out, "--model", model, "--calibration", train, "--num-images", 4, "--report", tmp_path / "insp", "--json"
        )
        assert r.exit_code == 0, r.output
        assert [a["backend"] for a in json.loads(r.stdout)["artifacts"]] == ["example-ort"]
    finally:
        backends.unregister("example-ort")
    assert "example-ort" not in backends.names()
