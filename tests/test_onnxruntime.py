"""ONNX export (xception_edge.onnx_export; tf2onnx for what it does not cover), int8 QDQ with ONNX Runtime's static quantization, and the ONNX Runtime
runtime, end to end on a small trained Xception-family model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from xception_edge.artifact import read_manifest
from xception_edge.cli import cli
from xception_edge.errors import BackendUnavailable
from xception_edge.preprocess import PreprocessSpec, list_images, load_images
from xception_edge.runtime import open_artifact

ORT_TARGETS = ("x86-onnxruntime-int8", "arm64-onnxruntime-int8", "onnxruntime-fp32")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def converted(converted_all, converted_all_log):
    """The ONNX Runtime targets of the suite's one conversion of every built-in target (60
    calibration images, verified on val): (out, payload with their results, log, small_model)."""
    out, payload, small_model = converted_all
    ours = {**payload, "results": [r for r in payload["results"] if r["target"] in ORT_TARGETS]}
    return out, ours, converted_all_log, small_model


@pytest.fixture(scope="module")
def held_out(small_model):
    import keras

    model, _, val = small_model
    files = list_images(val)
    x, _ = load_images(files, PreprocessSpec(71, 71))
    y = np.array([("a", "b", "c").index(f.parent.name) for f in files])
    return x, y, keras.models.load_model(model).predict(x, verbose=0)


def _onnx(path):
    import onnx

    return onnx.load(str(path))


def _weights_and_activations(model):
    """int8/uint8 weights feeding Conv/Gemm through DequantizeLinear, and the zero-point dtypes
    of the QuantizeLinear nodes (activations)."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    weights = []
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in dq:
            d = dq[n.input[1]]
            weights.append((n, inits[d.input[0]], inits[d.input[1]]))
    act_zp = {inits[n.input[2]].dtype.name for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return weights, act_zp


def test_every_onnxruntime_target_is_written_and_verified(converted):
    out, results, log, _ = converted
    by = {r["target"]: r for r in results["results"]}
    assert set(by) == set(ORT_TARGETS)
    for name, r in by.items():
        assert r["error"] is None and r["verification"]["passed"], (name, r)
        assert r["verification"]["images"] == 30 and r["verification"]["agreement"] >= 0.9, (name, r)
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(
            ["labels.txt", "manifest.json", "model.onnx"]
            + (["calibration.txt"] if "int8" in name else [])
            + (["transforms.npz"] if name != "onnxruntime-fp32" else [])  # the int8 profiles' CLE
        )
    assert by["onnxruntime-fp32"]["verification"]["max_abs_diff"] < 1e-4
    assert (
        by["x86-onnxruntime-int8"]["size_bytes"] < 0.8 * by["onnxruntime-fp32"]["size_bytes"]
    )  # tiny model: QDQ overhead; full-size ~0.26
    # one ONNX export per source model of the run: the model as given (onnxruntime-fp32) and after
    # CLE (the int8 profiles'); calibration ranges are shared only within one source model and
    # method: both ONNX Runtime int8 targets reuse the percentile ranges arm64-litert-int8 (also CLE,
    # also percentile 99.99) had computed for it (calibrate once)
    assert log.count("Exporting ONNX (opset 17) ...") == 2, log
    q = {t: read_manifest(out / t).conversion["quantization"] for t in ORT_TARGETS[:2]}
    assert q["x86-onnxruntime-int8"]["calibration_reused"] is True and q["arm64-onnxruntime-int8"]["calibration_reused"] is True
    litert = read_manifest(out / "arm64-litert-int8").conversion["calibration"]
    assert litert["ranges"] == "onnxruntime" and litert["reused"] is False


def test_manifest_records_export_and_quantization(converted):
    out, _, _, (model, _, _) = converted
    m = read_manifest(out / "x86-onnxruntime-int8")
    assert m.backend == "onnxruntime" and m.format == "onnx" and m.model_file == "model.onnx"
    assert m.input.dtype == "float32" and m.output.dtype == "float32"
    assert list(m.input.shape) == [-1, 71, 71, 3] and list(m.output.shape) == [-1, 3]
    c = m.conversion
    assert (
        c["opset"] == 17 and c["exporter"].startswith("xception_edge.onnx_export") and c["producer"].startswith("onnx.quantize")
    )
    assert m.tools["onnxruntime"] and m.tools["onnx"]
    assert c["quantization"] == {
        **c["quantization"],
        "format": "QDQ",
        "activation_dtype": "uint8",
        "weight_dtype": "int8",
        "per_channel": True,
        "reduce_range": True,
        "calibration_method": "percentile",
        "calibration_percentile": 99.99,
        "calibration_images": 60,
    }
    assert c["quantization"]["u8s8_overflow_pairs"]["pairs"] == 0 and c["quantization"]["u8s8_overflow_pairs"]["of"] > 1000
    assert c["op_counts"]["QuantizeLinear"] > 10 and m.calibration["count"] == 60


def test_int8_models_are_qdq_with_the_configured_types(converted):
    out = converted[0]
    x86 = _onnx(out / "x86-onnxruntime-int8" / "model.onnx")
    arm = _onnx(out / "arm64-onnxruntime-int8" / "model.onnx")
    fp32 = _onnx(out / "onnxruntime-fp32" / "model.onnx")
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in fp32.graph.node}
    for model, act in ((x86, "uint8"), (arm, "int8")):
        weights, act_zp = _weights_and_activations(model)
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert len(convs) >= 20  # the per-channel check below covers real Convs, not an empty list
        assert len(weights) == len(convs) + 1  # every Conv and the classifier's Gemm read int8 weights
        assert act_zp == {act}
        assert {w.dtype.name for _, w, _ in weights} == {"int8"}
        # per-channel: one scale per output channel of every regular Conv
        assert all(s.size == w.shape[0] and s.size > 1 for n, w, s in weights if n.op_type == "Conv")
    x86_max = max(int(np.abs(w).max()) for _, w, _ in _weights_and_activations(x86)[0])
    arm_max = max(int(np.abs(w).max()) for _, w, _ in _weights_and_activations(arm)[0])
    assert x86_max <= 64 < arm_max  # reduce_range: 7-bit weights on x86, full 8-bit range on arm64


def test_onnxruntime_agrees_with_keras_on_held_out_images(converted, held_out):
    out = converted[0]
    x, y, ref = held_out
    assert (ref.argmax(-1) == y).mean() >= 0.9  # the small model really learned the task
    fp32 = open_artifact(out / "onnxruntime-fp32").predict(x)
    np.testing.assert_allclose(fp32, ref, atol=1e-4)  # a layout mistake (NCHW vs NHWC) fails here
    for target in ORT_TARGETS[:2]:
        rt = open_artifact(out / target)
        assert rt.threads == min(2 if "x86" in target else 4, os.cpu_count())
        assert rt.session.get_session_options().intra_op_num_threads == rt.threads
        assert rt.session.get_session_options().inter_op_num_threads == 1
        assert rt.session.get_providers() == ["CPUExecutionProvider"]
        probs = rt.predict(x)
        assert probs.shape == (30, 3) and probs.dtype == np.float32
        assert (probs.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
        assert np.abs(probs - ref).max() < 0.25 and abs(probs.sum(-1).mean() - 1.0) < 0.02


def test_every_backend_agrees_with_keras_on_the_same_nhwc_images(converted, held_out):
    """fp32 artifacts of LiteRT, ONNX Runtime and OpenVINO (the dev install has every backend)."""
    x, _, ref = held_out
    targets = ("litert-fp32", "onnxruntime-fp32", "openvino-fp32")
    probs = {t: open_artifact(converted[0] / t).predict(x) for t in targets}
    for t, p in probs.items():
        np.testing.assert_allclose(p, ref, atol=1e-4, err_msg=t)


def test_calibration_method_and_ignored_scope_come_from_the_profile(small_model, tmp_path):
    model, train, val = small_model
    base = (
        'backend = "onnxruntime"\nformat = "onnx"\nprecision = "int8"\ncalibration_size = 30\n'
        '[quantization]\nactivation_dtype = "uint8"\nreduce_range = true\n'
    )
    for name, extra in (
        ("ort-minmax", ""),
        ("ort-percentile", 'calibration_method = "percentile"\n'),
        ("ort-keep-head", 'ignored_scope = ["predictions"]\n'),
    ):
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\n' + base + extra)
    r = run(
        "convert",
        "--model",
        model,
        "--target",
        tmp_path / "ort-minmax.toml",
        "--target",
        tmp_path / "ort-percentile.toml",
        "--target",
        tmp_path / "ort-keep-head.toml",
        "--calibration",
        train,
        "--verify-data",
        val,
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 0, r.output
    q = {
        n: read_manifest(tmp_path / "o" / n).conversion["quantization"] for n in ("ort-minmax", "ort-percentile", "ort-keep-head")
    }
    assert q["ort-percentile"]["calibration_method"] == "percentile" and q["ort-percentile"]["calibration_reused"] is False
    assert q["ort-percentile"]["calibration_percentile"] == 99.999 and "calibration_percentile" not in q["ort-minmax"]
    assert q["ort-keep-head"]["calibration_reused"] is True  # same method and images as ort-minmax
    from onnx import numpy_helper

    def act_scales(name):
        m = _onnx(tmp_path / "o" / name / "model.onnx")
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear"}

    minmax, pct = act_scales("ort-minmax"), act_scales("ort-percentile")
    shared = set(minmax) & set(pct)
    assert len(shared) > 10
    # percentile (99.999th) clips the tails: never a wider range than minmax, narrower wherever outliers exist
    assert all(pct[t] <= minmax[t] * 1.0001 for t in shared) and sum(pct[t] < minmax[t] * 0.995 for t in shared) >= 10
    head = _onnx(tmp_path / "o" / "ort-keep-head" / "model.onnx")
    gemm = [n for n in head.graph.node if n.op_type == "Gemm"]
    producers = {o: n.op_type for n in head.graph.node for o in n.output}
    assert len(gemm) == 1 and producers.get(gemm[0].input[1]) != "DequantizeLinear"  # the classifier stayed float
    assert q["ort-keep-head"]["excluded_nodes"] and all("predictions" in n for n in q["ort-keep-head"]["excluded_nodes"])


def test_saved_model_input_exports_to_onnx(small_model, small_saved_model, held_out, tmp_path):
    model, train, val = small_model
    r = run(
        "convert", "--model", small_saved_model, "--target", "onnxruntime-fp32", "--verify-data", val, "--out", tmp_path / "o"
    )
    assert r.exit_code == 0, r.output
    x, _, ref = held_out
    np.testing.assert_allclose(open_artifact(tmp_path / "o" / "onnxruntime-fp32").predict(x), ref, atol=1e-4)


def test_bench_runs_the_onnx_artifact_and_refuses_a_missing_or_modified_one(converted, tmp_path):
    import shutil

    out, _, _, (_, _, val) = converted
    r = CliRunner().invoke(cli, ["bench", str(out / "x86-onnxruntime-int8"), "--runs", "5", "--data", str(val), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["artifact"]["backend"] == "onnxruntime" and res["accuracy"]["top1"] >= 0.9 and res["latency"]["p50_ms"] > 0

    art = tmp_path / "art"
    shutil.copytree(out / "onnxruntime-fp32", art)
    model = art / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    r = CliRunner().invoke(cli, ["bench", str(art), "--runs", "2"])
    assert r.exit_code == 2 and "model.onnx does not match its sha256" in r.output, r.output
    model.unlink()
    r = CliRunner().invoke(cli, ["bench", str(art), "--runs", "2"])
    assert r.exit_code == 2 and "model.onnx is missing" in r.output, r.output
    assert "Traceback" not in r.output


def test_missing_onnxruntime_names_the_extra(converted, monkeypatch):
    from xception_edge.backends.onnxruntime import frameworks

    for mod in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'xception-edge\[onnxruntime\]'") as e:
        open_artifact(converted[0] / "onnxruntime-fp32")
    assert e.value.exit_code == 2 and "onnxruntime is not installed" in str(e.value)
    with pytest.raises(BackendUnavailable, match=r"xception-edge\[convert\]"):
        frameworks.ort_quantization()


def test_runtime_imports_only_onnxruntime(converted):
    code = (
        "import sys\nfrom xception_edge.runtime import open_artifact\n"
        f"rt = open_artifact({str(converted[0] / 'x86-onnxruntime-int8')!r})\n"
        "import numpy as np\nrt.predict(np.zeros((2, 71, 71, 3), np.float32))\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'onnx', 'tf2onnx', 'onnxruntime') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['onnxruntime']"


ORT = 'backend = "onnxruntime"\nformat = "onnx"\n'


@pytest.mark.parametrize(
    "body,needle",
    [
        (ORT + 'precision = "fp16"\n', 'support precision "fp32" or "int8"'),
        (ORT + 'precision = "int8"\ninput_dtype = "uint8"\n', "keeps float32 input and output"),
        (ORT + 'precision = "int8"\n[quantization]\nweight_dtype = "uint8"\n', "no int8-activation x uint8-weight kernels"),
        (
            'backend = "litert"\nformat = "tflite"\nprecision = "int8"\n[quantization]\nx86_without_vnni = true\n',
            "x86_without_vnni is an onnxruntime setting",
        ),
    ],
)
def test_inconsistent_onnxruntime_profiles_are_bad_input(tmp_path, image_folder, body, needle):
    toml = tmp_path / "bad.toml"
    toml.write_text('name = "bad"\n' + body)
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            "--model",
            "m.keras",
            "--target",
            str(toml),
            "--calibration",
            str(image_folder),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 2 and needle in r.output, r.output


def test_weights_that_can_saturate_without_vnni_are_refused_or_warned(small_model, tmp_path):
    """Verification on a host with VNNI cannot see AVX2's 16-bit saturation, so the converter counts
    the weight pairs that can saturate: a profile for CPUs without VNNI refuses them."""
    model, train, val = small_model
    base = (
        'backend = "onnxruntime"\nformat = "onnx"\nprecision = "int8"\nhardware = "x86-64"\ncalibration_size = 30\n'
        '[quantization]\nactivation_dtype = "uint8"\nreduce_range = false\n'
    )
    (tmp_path / "guarded.toml").write_text('name = "guarded"\n' + base + "x86_without_vnni = true\n")
    (tmp_path / "unguarded.toml").write_text('name = "unguarded"\n' + base)
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            "--model",
            str(model),
            "--target",
            str(tmp_path / "guarded.toml"),
            "--target",
            str(tmp_path / "unguarded.toml"),
            "--calibration",
            str(train),
            "--verify-data",
            str(val),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 1, r.output
    assert "guarded: " in r.output and "can saturate the 16-bit sums" in r.output and "reduce_range = true" in r.output
    assert not (tmp_path / "o" / "guarded").exists()
    assert "warning: unguarded:" in r.output
    risk = read_manifest(tmp_path / "o" / "unguarded").conversion["quantization"]["u8s8_overflow_pairs"]
    assert risk["pairs"] > 0 and 0 < risk["fraction"] < 0.5
