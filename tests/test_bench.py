"""`xception-edge bench`: latency and accuracy of one artifact with its own runtime, and the
device install: a venv with only `xception-edge[device]` benches a .tflite without TensorFlow."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from xception_edge.cli import cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "openvino", "onnxruntime", "nncf", "tf2onnx", "onnx")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def artifacts(converted_all):
    """The suite's one conversion of every built-in target (read only here): (out, val)."""
    out, _, (_, _, val) = converted_all
    return out, val


def test_bench_latency_and_accuracy(artifacts, tmp_path):
    out, val = artifacts
    ref = tmp_path / "fp32.json"
    r = run("bench", out / "litert-fp32", "--runs", 20, "--warmup", 2, "--data", val, "--json", ref)
    assert r.exit_code == 0, r.output
    fp32 = json.loads(ref.read_text())
    lat = fp32["latency"]
    assert lat["runs"] == 20 and len(lat["samples_ms"]) == 20
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["load_ms"] > 0 and lat["first_inference_ms"] > 0 and fp32["peak_rss_mb"] > 10
    acc = fp32["accuracy"]
    assert acc["images"] == 30 and acc["top1"] >= 0.9 and acc["top5"] == 1.0
    assert set(acc["per_class"]) == {"a", "b", "c"} and all(v["images"] == 10 for v in acc["per_class"].values())
    assert len(fp32["predictions"]) == 30 and fp32["preprocess_ms"]["images"] == 30

    r = run("bench", out / "arm64-litert-int8", "--runs", 5, "--data", val, "--reference", ref, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["reference"]["images"] == 30 and res["reference"]["agreement"] >= 0.9
    assert len(res["reference"]["flipped"]) == round(30 * (1 - res["reference"]["agreement"]))
    assert res["cpu_warning"] and "arm64" in res["cpu_warning"]  # made for ARM, measured on x86


def test_bench_bad_input(artifacts, tmp_path):
    out, val = artifacts
    r = run("bench", out / "litert-fp32", "--runs", 0)
    assert r.exit_code == 2 and "--runs 0" in r.output
    r = run("bench", tmp_path)
    assert r.exit_code == 2 and "no manifest.json" in r.output
    wrong = tmp_path / "wrong"
    (wrong / "zebra").mkdir(parents=True)
    (val / "a" / "a_000.png").link_to(wrong / "zebra" / "z.png") if hasattr(Path, "link_to") else (
        wrong / "zebra" / "z.png"
    ).write_bytes((val / "a" / "a_000.png").read_bytes())
    (wrong / "a").mkdir()
    (wrong / "a" / "a.png").write_bytes((val / "a" / "a_000.png").read_bytes())
    r = run("bench", out / "litert-fp32", "--data", wrong)
    assert r.exit_code == 2 and "zebra" in r.output and "labels.txt" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = run("bench", out / "litert-fp32", "--data", val, "--reference", bad)
    assert r.exit_code == 2 and "no 'predictions'" in r.output


def test_undecodable_images_stay_in_the_denominator(artifacts, tmp_path):
    import shutil

    out, val = artifacts
    data = tmp_path / "data"
    shutil.copytree(val, data)
    (data / "a" / "broken.jpg").write_bytes(b"")
    r = run("bench", out / "litert-fp32", "--runs", 2, "--data", data, "--json")
    res = json.loads(r.stdout)
    assert res["accuracy"]["images"] == 31 and res["accuracy"]["undecodable"] == 1
    assert res["accuracy"]["top1"] <= 30 / 31 and any("broken.jpg" in u for u in res["undecodable"])


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory):
    """A venv with only the device install: pip install 'xception-edge[device]' (non-editable)."""
    venv = tmp_path_factory.mktemp("device") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"{ROOT}[device]"], check=True, timeout=900)
    return py


@pytest.mark.slow  # a fresh venv or wheel build
def test_device_venv_benches_tflite_without_tensorflow(device_venv, artifacts):
    out, val = artifacts
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        from click.testing import CliRunner
        from xception_edge.cli import cli
        r = CliRunner().invoke(cli, ["bench", {str(out / "arm64-litert-int8")!r}, "--runs", "5", "--data", {str(val)!r}, "--json"])
        assert r.exit_code == 0, r.output
        print(json.dumps({{"result": json.loads(r.stdout),
                          "imported": [m for m in {HEAVY!r} if m in sys.modules],
                          "installed": [m for m in {HEAVY!r} if importlib.util.find_spec(m) is not None]}}))
    """)
    p = subprocess.run([str(device_venv), "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["installed"] == [] and report["imported"] == []
    assert report["result"]["accuracy"]["top1"] >= 0.9 and report["result"]["latency"]["runs"] == 5
    # and the console script itself
    exe = device_venv.with_name("xception-edge")
    p = subprocess.run([str(exe), "bench", str(out / "litert-fp32"), "--runs", "3"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "p50" in p.stdout, p.stderr
    p = subprocess.run([str(exe), "targets", "list"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "arm64-litert-int8" in p.stdout  # profiles ship in the wheel


@pytest.fixture(scope="module")
def ov_ort_artifacts(converted_all):
    """x86-openvino-int8 and x86-onnxruntime-int8 from the suite's one conversion: (out, val)."""
    out, _, (_, _, val) = converted_all
    return out, val


@pytest.mark.slow  # a fresh venv or wheel build
def test_device_venv_with_openvino_or_onnxruntime_added(device_venv, ov_ort_artifacts):
    """pip install 'xception-edge[device,openvino,onnxruntime]': each artifact imports only its runtime.

    Adds the extras to the module's device venv (one venv for both tests, so it runs after the
    test above, which needs the venv without them: pytest runs a file's tests in order)."""
    out, val = ov_ort_artifacts
    py = device_venv
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"{ROOT}[device,openvino,onnxruntime]"], check=True, timeout=900)
    for target, own in (("x86-openvino-int8", "openvino"), ("x86-onnxruntime-int8", "onnxruntime")):
        code = textwrap.dedent(f"""
            import json, sys
            from click.testing import CliRunner
            from xception_edge.cli import cli
            r = CliRunner().invoke(cli, ["bench", {str(out / target)!r}, "--runs", "5", "--data", {str(val)!r}, "--json"])
            assert r.exit_code == 0, r.output
            print(json.dumps({{"result": json.loads(r.stdout), "imported": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """)
        p = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout.strip().splitlines()[-1])
        assert report["imported"] == [own], (target, report["imported"])
        assert report["result"]["accuracy"]["top1"] >= 0.9
