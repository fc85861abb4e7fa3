import dataclasses
import json

import pytest

from xception_edge import backends
from xception_edge.errors import BadInput
from xception_edge.targets import builtin_names, load_profile, resolve_target, resolve_targets
from xception_edge.profiles import DType, Precision, QuantSpec


def test_builtin_litert_targets_have_the_promised_settings():
    names = builtin_names()
    for n in ("arm64-litert-int8", "arm64-litert-fp16", "litert-dynamic-int8", "litert-fp32"):
        assert n in names
    p = resolve_target("arm64-litert-int8")
    assert (p.backend, p.precision, p.input_dtype, p.output_dtype, p.per_channel) == (
        "litert",
        Precision.INT8,
        DType.INT8,
        DType.INT8,
        True,
    )
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


_INT8 = 'name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "int8"\n'


@pytest.mark.parametrize(
    "body,match",
    [
        ('name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "int4"\n', "precision = 'int4' is not one of"),
        ('name = "x"\nbackend = "litert"\nformat = "onnx"\nprecision = "fp32"\n', "writes format tflite"),
        ('name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\ninput_dtype = "int8"\n', "needs precision"),
        ('name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\nthreads = 0\n', "positive integer"),
        (
            'name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\n[gates]\nmax_top1_drop_pp = -1\n',
            "must not be negative",
        ),
        ('name = "x"\nbackend = "litert"\nformat = "tflite"\n', "missing required key 'precision'"),
        ('name = "x\nbackend', "not valid TOML"),
        (
            'name = "x"\nbackend = "openvino"\nformat = "openvino-ir"\nprecision = "int8"\n[quantization]\nactivations_range = "max"\n',
            r"\[quantization\] activations_range = 'max' is not one of: minmax, mean_minmax, histogram",
        ),
        (
            'name = "x"\nbackend = "litert"\nformat = "tflite"\nprecision = "int8"\n[quantization]\ndisable_bias_correction = true\n',
            "disable_bias_correction is an openvino setting; remove it for backend litert",
        ),
        (
            'name = "x"\nbackend = "openvino"\nformat = "openvino-ir"\nprecision = "int8"\n[quantization]\ndisable_bias_correction = 1\n',
            "disable_bias_correction must be true or false",
        ),
        *[
            (
                _INT8 + f'[quantization]\ntransforms = ["cle", "adaround"]\n[quantization.transform_options.adaround]\n{line}\n',
                words,
            )
            for line, words in (
                ("iterations = 0", r"\[quantization.transform_options.adaround\]: adaround: iterations 0 must be at least 1"),
                ('kinds = ["bogus"]', r"kinds \['bogus'\] must name some of: depthwise"),
                ("weight_qmax = 63", "weight_qmax is set by the target's backend"),
                ("iteration = 10", r"unknown option\(s\) iteration; known options: weight_bits"),
                ('iterations = "many"', "an option has a value of the wrong kind"),
            )
        ],
        (
            _INT8 + '[quantization]\ntransforms = ["cle"]\n[quantization.transform_options.adaround]\niterations = 10\n',
            r"\[quantization.transform_options.adaround\] is for a transform not in transforms = \['cle'\]",
        ),
        (_INT8 + "[quantization]\ntransform_options = 3\n", "transform_options must be a table of tables"),
        (
            'name = "x"\nbackend = "openvino"\nformat = "openvino-ir"\nprecision = "int8"\n[quantization]\ncalibration_method = "entropy"\n',
            "calibration_method is a litert or onnxruntime setting; remove it for backend openvino",
        ),
        (
            _INT8 + '[quantization]\ncalibration_method = "entropy"\ncalibration_percentile = 99.9\n',
            r'calibration_percentile is for calibration_method = "percentile", not \'entropy\'; remove it or set the method',
        ),
        *[
            (_INT8 + f'[quantization]\ncalibration_method = "percentile"\ncalibration_percentile = {v}\n', match)
            for v, match in (
                ("0", r"calibration_percentile must be within \(0, 100\], got 0.0"),
                ("100.5", r"calibration_percentile must be within \(0, 100\], got 100.5"),
                ('"high"', "calibration_percentile must be a number"),
            )
        ],
    ],
)
def test_malformed_profiles_are_one_line_errors(tmp_path, body, match):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(BadInput, match=match) as info:
        load_profile(f)
    assert "\n" not in str(info.value)


def test_target_from_a_user_toml_path(tmp_path):
    f = tmp_path / "pi-zero.toml"
    f.write_text(
        'name = "pi-zero"\ndescription = "mine"\nbackend = "litert"\nformat = "tflite"\nprecision = "int8"\n'
        'input_dtype = "uint8"\noutput_dtype = "float32"\nper_channel = false\ncalibration_size = 50\n'
    )
    p = resolve_target(str(f))
    assert p.name == "pi-zero" and p.input_dtype is DType.UINT8 and not p.per_channel and p.calibration_size == 50


def test_all_expands_to_every_builtin_once():
    ps = resolve_targets(["litert-fp32", "all"])
    names = [p.name for p in ps]
    assert names[0] == "litert-fp32" and sorted(names) == sorted(set(names)) and set(names) == set(builtin_names())


@pytest.mark.slow  # a fresh venv or wheel build
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


def _profile_text(name: str, extra: str = "") -> str:
    return f'name = {json.dumps(name)}\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\n{extra}'


@pytest.mark.parametrize(
    "name",
    ["../victim/important", "a/b", "/abs", "", ".", "..", ".hidden", "-rf", "a b", "x" * 101, "caf\u00e9", "nul\u0000", "a\tb"],
)
def test_profile_name_must_be_a_plain_folder_name(tmp_path, name):
    f = tmp_path / "evil.toml"
    f.write_text(_profile_text(name))
    with pytest.raises(BadInput, match=r"evil\.toml: name = .* is not a plain name") as info:
        load_profile(f)
    assert repr(name) in str(info.value) and "\n" not in str(info.value)
    from xception_edge.targets import profile_from_dict

    record = {**resolve_target("litert-fp32").to_dict(), "name": name}
    with pytest.raises(BadInput, match=r"manifest\.json: name = .* is not a plain name"):
        profile_from_dict(record, tmp_path / "manifest.json")


def test_plain_profile_names_are_accepted(tmp_path):
    f = tmp_path / "ok.toml"
    for name in ("pi-zero_2.v1", "A", "9" * 100):
        f.write_text(_profile_text(name))
        assert load_profile(f).name == name


def test_a_custom_profile_with_a_builtin_name_is_not_silently_dropped(tmp_path):
    mine = tmp_path / "my.toml"
    mine.write_text(_profile_text("litert-fp32", "threads = 1\n"))
    with pytest.raises(
        BadInput, match=r"two different target profiles are named 'litert-fp32': .*litert-fp32\.toml and .*my\.toml"
    ) as info:
        resolve_targets(["litert-fp32", str(mine)])
    assert "\n" not in str(info.value)
    with pytest.raises(BadInput, match="two different target profiles"):
        resolve_targets([str(mine), "all"])
    # the same profile twice (even from a copy of the file) is one target
    copy = tmp_path / "copy.toml"
    builtin = resolve_target("litert-fp32")
    copy.write_text(open(builtin.source).read())
    ps = resolve_targets(["litert-fp32", "litert-fp32", str(copy)])
    assert [p.source for p in ps] == [builtin.source]


@pytest.mark.parametrize(
    "extra,match",
    [
        ("[verify]\nnum_images = 3.5\n", r"\[verify\] num_images must be a whole number, got 3\.5"),
        ("[gates]\nmax_top1_drop_pp = nan\n", r"max_top1_drop_pp must be a finite number, got nan"),
        ("[gates]\nmax_size_mb = inf\n", r"max_size_mb must be a finite number, got inf"),
        ("[verify]\nnum_images = 9223372036854775807\n", r"num_images = 9223372036854775807 is too large"),
        ("threads = 9223372036854775807\n", r"threads must be a positive integer \(at most 2147483647\)"),
    ],
)
def test_profile_numbers_must_be_finite_and_of_the_right_kind(tmp_path, extra, match):
    f = tmp_path / "n.toml"
    f.write_text(_profile_text("n", extra))
    with pytest.raises(BadInput, match=match) as info:
        load_profile(f)
    assert str(f) in str(info.value)


def _backend_profile(tmp_path, spec, quantization: str):
    precision = "int8" if "int8" in spec.precisions else spec.precisions[0]
    f = tmp_path / f"{spec.name}.toml"
    f.write_text(
        f'name = "t"\nbackend = "{spec.name}"\nformat = "{spec.formats[0]}"\nprecision = "{precision}"\n'
        f"[quantization]\n{quantization}\n"
    )
    return f


OWNED_SETTINGS = sorted({key for spec in backends.registry().values() for key in spec.settings})
OTHER_VALUES = {
    "activations_range": "minmax",
    "calibration_method": "percentile",
    "calibration_percentile": 99.0,
}  # a value other than the default, for settings that are not bools
NEEDS = {"calibration_percentile": 'calibration_method = "percentile"'}  # what the owners' profiles need beside it


@pytest.mark.parametrize("setting", OWNED_SETTINGS)
def test_a_backends_own_setting_is_refused_for_every_other_backend(tmp_path, setting):
    """[quantization] keys a backend's spec owns (``settings``, e.g. onnxruntime's x86_without_vnni):
    its own profiles take them, every other backend's profile is a one-line BadInput naming the owner."""
    default = getattr(QuantSpec(), setting)
    other = OTHER_VALUES.get(setting, not default)
    assert other != default  # a setting that is not a bool needs its other value in OTHER_VALUES
    toml = str(other).lower() if isinstance(other, bool) else repr(other) if isinstance(other, float) else f'"{other}"'
    for spec in backends.registry().values():
        prof = _backend_profile(tmp_path, spec, f"{setting} = {toml}")
        if setting in spec.settings:
            prof = _backend_profile(tmp_path, spec, f"{setting} = {toml}\n{NEEDS.get(setting, '')}")
            assert getattr(load_profile(prof).quantization, setting) == other
        else:
            owners = " or ".join(s.name for s in backends.registry().values() if setting in s.settings)
            with pytest.raises(BadInput, match=rf"{setting} is an? {owners} setting; remove it for backend {spec.name}"):
                load_profile(prof)


def test_x86_without_vnni_belongs_to_onnxruntime():
    assert "x86_without_vnni" in OWNED_SETTINGS and "x86_without_vnni" in backends.get("onnxruntime").settings
    assert {s.name for s in backends.registry().values() if "calibration_method" in s.settings} == {"litert", "onnxruntime"}


def test_transform_options_reach_the_transform_with_the_backend_grid(tmp_path):
    """A profile's [quantization.transform_options.NAME] table: parsed, merged with the grid the
    backend fixes, written back by a sweep cell's profile and read again unchanged."""
    import dataclasses

    from xception_edge.sweeps.profile import profile_toml
    from xception_edge.transforms.variants import grid_params, variant_key

    f = tmp_path / "mine.toml"
    f.write_text(
        _INT8 + '[quantization]\ntransforms = ["cle", "adaround"]\n'
        '[quantization.transform_options.adaround]\nkinds = ["depthwise"]\niterations = 300\n'
        "[quantization.transform_options.cle]\nalphas = [0.5]\n"
    )
    p = load_profile(f)
    assert p.quantization.transform_options == {"adaround": {"kinds": ["depthwise"], "iterations": 300}, "cle": {"alphas": [0.5]}}
    assert grid_params(p) == {
        "cle": {"alphas": [0.5]},
        "adaround": {"kinds": ["depthwise"], "iterations": 300, "weight_qmax": 127},
    }
    plain = dataclasses.replace(p, quantization=dataclasses.replace(p.quantization, transform_options={}))
    assert variant_key(p) != variant_key(plain)  # other options: another source variant
    again = tmp_path / "again.toml"
    again.write_text(profile_toml(p, "round trip"))
    assert dataclasses.replace(load_profile(again), source="") == dataclasses.replace(p, source="")
