import dataclasses

import pytest

from xception_edge.errors import BadInput
from xception_edge.targets import builtin_names, load_profile, resolve_target, resolve_targets
from xception_edge.types import Backend, DType, Precision


def test_builtin_litert_targets_have_the_promised_settings():
    names = builtin_names()
    for n in ("arm64-litert-int8", "arm64-litert-fp16", "litert-dynamic-int8", "litert-fp32"):
        assert n in names
    p = resolve_target("arm64-litert-int8")
    assert (p.backend, p.precision, p.input_dtype, p.output_dtype, p.per_channel) == (
        Backend.LITERT, Precision.INT8, DType.INT8, DType.INT8, True)
    assert p.calibration_size == 300 and p.gates.max_top1_drop_pp is not None
    assert resolve_target("arm64-litert-fp16").precision is Precision.FP16
    assert resolve_target("litert-dynamic-int8").precision is Precision.DYNAMIC_INT8


def test_profiles_are_frozen():
    p = resolve_target("litert-fp32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.threads = 8


def test_unknown_target_suggests_close_matches():
    with pytest.raises(BadInput, match="did you mean: arm64-litert-int8"):
        resolve_target("arm64-litert-int")


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "my.toml"
    f.write_text('name = "my"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\nthreds = 2\n')
    with pytest.raises(BadInput, match=r"my\.toml: unknown key 'threds'.*threads"):
        load_profile(f)
    f.write_text('name = "my"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\n[gates]\nmax_drop = 1\n')
    with pytest.raises(BadInput, match=r"unknown key 'max_drop' in \[gates\]"):
        load_profile(f)


@pytest.mark.parametrize("body,match", [
    ('name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "int4"\n', "precision = 'int4' is not one of"),
    ('name = "x"\nbackend = "litert"\nformat = "onnx"\nprecision = "fp32"\n', "writes format tflite"),
    ('name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\ninput_dtype = "int8"\n', "needs precision"),
    ('name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\nthreads = 0\n', "positive integer"),
    ('name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\n[gates]\nmax_top1_drop_pp = -1\n', "must not be negative"),
    ('name = "x"\nbackend = "litert"\nformat = "tflite"\n', "missing required key 'precision'"),
    ('name = "x\nbackend', "not valid TOML"),
])
def test_malformed_profiles_are_one_line_errors(tmp_path, body, match):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(BadInput, match=match) as info:
        load_profile(f)
    assert "\n" not in str(info.value)


def test_target_from_a_user_toml_path(tmp_path):
    f = tmp_path / "pi-zero.toml"
    f.write_text('name = "pi-zero"\ndescription = "mine"\nbackend = "litert"\nformat = "tflite"\nprecision = "int8"\n'
                 'input_dtype = "uint8"\noutput_dtype = "float32"\nper_channel = false\ncalibration_size = 50\n')
    p = resolve_target(str(f))
    assert p.name == "pi-zero" and p.input_dtype is DType.UINT8 and not p.per_channel and p.calibration_size == 50


def test_all_expands_to_every_builtin_once():
    ps = resolve_targets(["litert-fp32", "all"])
    names = [p.name for p in ps]
    assert names[0] == "litert-fp32" and sorted(names) == sorted(set(names)) and set(names) == set(builtin_names())


def test_builtin_profiles_ship_in_a_non_editable_install(tmp_path):
    """Build the wheel and check the profiles are inside the package."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)], check=True)
    (wheel,) = tmp_path.glob("xception_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for n in builtin_names():
        assert f"xception_edge/_targets/{n}.toml" in names
