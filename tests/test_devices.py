"""`--device`: the spec, the device-side zipapp, and `bench --device` on real devices: the emulated
arm64 device (Debian's aarch64 CPython under QEMU 10, built once under the toolkit's cache:
$XCEPTION_EDGE_CACHE or ~/.cache/xception-edge, about 15 s and 100 MB of downloads on a clean
machine) and local interpreters without the runtime or too old."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import older_python

from xception_edge import backends
from xception_edge.cli import cli
from xception_edge.devices import emulated, zipapp
from xception_edge.devices.spec import DEFAULT_CPU, parse
from xception_edge.errors import BadInput


@pytest.mark.parametrize(
    "value, kind, label, extra",
    [
        (None, "local", "local", {}),
        ("local", "local", "local", {}),
        ("ssh://pi5", "ssh", "ssh://pi5", {"host": "pi5", "user": "", "port": None}),
        ("ssh://me@rpi.lan:2222", "ssh", "ssh://me@rpi.lan:2222", {"host": "rpi.lan", "user": "me", "port": 2222}),
        ("ssh://[::1]:22", "ssh", "ssh://[::1]:22", {"host": "::1", "port": 22}),
        ("emulated:arm64", "emulated", f"emulated:arm64:{DEFAULT_CPU}", {"cpu": DEFAULT_CPU}),
        ("emulated:arm64:cortex-a72", "emulated", "emulated:arm64:cortex-a72", {"cpu": "cortex-a72"}),
    ],
)
def test_device_spec_parses(value, kind, label, extra):
    spec = parse(value)
    assert (spec.kind, spec.label) == (kind, label)
    for key, want in extra.items():
        assert getattr(spec, key) == want


@pytest.mark.parametrize(
    "value",
    ["", " local", "gpu", "emulated", "emulated:x86", "emulated:arm64:cortex-z9", "emulated:arm64:a76:x", "ssh://",
     "ssh://host:0", "ssh://host:99999", "ssh://bad host", "ssh://us er@h", "ssh://-oProxyCommand=x"],
)  # fmt: skip
def test_bad_device_spec_is_one_line_naming_value_and_forms(value):
    with pytest.raises(BadInput) as err:
        parse(value)
    msg = str(err.value)
    assert "\n" not in msg and repr(value) in msg and "emulated:arm64" in msg and "ssh://" in msg


def test_bad_device_on_the_command_line_is_exit_2(converted_all):
    out, _, _ = converted_all
    r = CliRunner().invoke(cli, ["bench", str(out / "litert-fp32"), "--device", "arm64"])
    assert r.exit_code == 2 and "'arm64'" in r.output and "emulated:arm64" in r.output, r.output


def test_zipapp_holds_only_the_device_path(tmp_path):
    """One backend's runtime, no converter, no CLI; and it runs in a Python that has numpy but
    none of click, rich, Pillow, TensorFlow or another backend's runtime (checked by a blocker)."""
    app = zipapp.build("onnxruntime", tmp_path / "runner.pyz")
    names = zipfile.ZipFile(app).namelist()
    assert "xception_edge/backends/onnxruntime/runtime.py" in names
    other = [n for n in names if ("litert/" in n or "openvino/" in n) and not n.endswith("/__init__.py")]
    assert not other and not [n for n in names if n.endswith(("convert.py", "cli.py", "calibration.py", "preprocess.py"))]
    probe = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in {'click','rich','PIL','tensorflow','keras','ai_edge_litert','openvino','onnx'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(app)!r})\n"
        "import xception_edge.devices.runner, xception_edge.artifact, xception_edge.latency\n"
        "import xception_edge.backends.onnxruntime.runtime\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


# ---------------------------------------------------------------- local interpreters as devices
def _bench_json(args: list[str], tmp_path: Path, name: str = "bench.json") -> tuple[int, str, dict | None]:
    out = tmp_path / name
    r = CliRunner().invoke(cli, ["bench", *args, "--json", str(out)])
    return r.exit_code, r.output, json.loads(out.read_text()) if out.exists() else None


def test_device_python_without_the_runtime_is_one_line_and_exit_2(converted_all, tmp_path):
    out, _, _ = converted_all
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    py = tmp_path / "venv" / "bin" / "python"
    code, output, data = _bench_json([str(out / "arm64-onnxruntime-int8"), "--device-python", str(py)], tmp_path)
    assert code == 2 and data is None, output
    lines = [x for x in output.splitlines() if x.strip()]
    assert f"{py} -m pip install onnxruntime numpy" in lines[-1] and "local: numpy is not installed" in lines[-1], output


def test_device_python_too_old_is_one_line_and_exit_2(converted_all, tmp_path):
    old = older_python()
    if old is None:
        pytest.skip("no Python older than 3.9 on this machine")
    out, _, _ = converted_all
    code, output, _ = _bench_json([str(out / "litert-fp32"), "--device", "local", "--device-python", old], tmp_path)
    assert code == 2 and "needs Python >= 3.9" in output and old in output, output


# ---------------------------------------------------------------- the emulated arm64 device
def _check_emulated(data: dict, cpu: str, core: str, runtime: str, version: str) -> None:
    assert data["host"]["machine"] == "aarch64" and data["host"]["cpu_core"] == core
    assert data["device"]["emulated"] is True and data["latency_emulated"] is True
    assert data["device"]["cpu_model"] == cpu and data["device"]["spec"] == f"emulated:arm64:{cpu}"
    assert data["device"]["runtime"][runtime] == version
    assert data["cpu_warning"] is None  # an arm64 artifact on an aarch64 device
    assert data["latency"]["runs"] == 3 and data["latency"]["p50_ms"] > 0


def test_bench_emulated_arm64_litert_int8(converted_all, emulated_arm64, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the device's folder must be gone after
    out, _, _ = converted_all
    code, output, data = _bench_json(
        [str(out / "arm64-litert-int8"), "--device", "emulated:arm64", "--runs", "3", "--warmup", "1"], tmp_path
    )
    assert code == 0, output
    _check_emulated(
        data, "cortex-a76", "Cortex-A76", "ai-edge-litert", dict(backends.get("litert").emulated_versions)["ai-edge-litert"]
    )
    p = data["parity"]
    assert p["top1_agreement"] == 1.0 and p["max_step_diff"] <= 1 and p["passed"], p
    assert p["step_from"] == "manifest io.output scale" and p["images"] == 16
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bench.json"]


def test_bench_emulated_arm64_onnxruntime_int8_on_images(converted_all, emulated_arm64, tmp_path):
    out, _, (_, _, val) = converted_all
    args = [str(out / "arm64-onnxruntime-int8"), "--device", "emulated:arm64:cortex-a72", "--runs", "3", "--warmup", "1"]
    code, output, data = _bench_json([*args, "--data", str(val)], tmp_path)
    assert code == 0, output
    _check_emulated(
        data, "cortex-a72", "Cortex-A72", "onnxruntime", dict(backends.get("onnxruntime").emulated_versions)["onnxruntime"]
    )
    p = data["parity"]
    # Float output, compared in 1/256 steps; the x86 host runs the QDQ reference (unfused), the
    # device ONNX Runtime's fused int8 kernels: measured 1.004 steps with tf2onnx's export and
    # 2.008 with the toolkit's ONNX writer (Dense as one Gemm), 35 on the demo model.
    assert p["images"] == 30 and p["top1_agreement"] == 1.0 and p["max_step_diff"] <= 3, p
    assert p["step_from"].startswith("1/256")
    assert data["accuracy"]["images"] == 30 and len(data["predictions"]) == 30


def _classes_rolled(small_model, tmp_path: Path) -> Path:
    """A deliberately different artifact: small_model with its output classes rolled by one
    (the last Dense layer's columns), converted to litert-fp32."""
    import keras

    import xception_edge as xe

    model = keras.models.load_model(small_model[0])
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([np.roll(kernel, 1, axis=-1), np.roll(bias, 1)])
    model.save(tmp_path / "rolled.keras")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    xe.convert(tmp_path / "rolled.keras", ["litert-fp32"], labels=tmp_path / "labels.txt", out=tmp_path / "rolled", verify=False)
    return tmp_path / "rolled" / "litert-fp32"


def test_parity_fails_against_a_different_artifact(converted_all, emulated_arm64, tmp_path):
    """The device runs arm64-litert-int8; the host's outputs come from another artifact (the
    same model with its classes rolled): parity must fail, so it is not a check that always passes."""
    from xception_edge.devices.bench import bench_on_device
    from xception_edge.devices.remote import Timing

    out, _, small = converted_all
    val = small[2]
    other = _classes_rolled(small, tmp_path)
    timing = Timing(runs=1, warmup=0, rounds=1)
    data = bench_on_device(out / "arm64-litert-int8", "emulated:arm64", timing, data=val, parity_reference=other)
    p = data["parity"]
    assert p["passed"] is False and p["top1_agreement"] < 0.5 and p["max_step_diff"] > 10, p
    assert p["reference"]["target"] == "litert-fp32" and len(p["flipped"]) == round(30 * (1 - p["top1_agreement"]))


def test_emulated_site_without_the_runtime_is_one_line_and_exit_2(converted_all, emulated_arm64, tmp_path, monkeypatch):
    """A device whose Python has numpy but not ONNX Runtime: the real emulated Python, given the
    LiteRT site for the ONNX Runtime artifact (a cache that links to the real device's parts)."""
    folder = tmp_path / "cache" / "devices" / emulated.NAME
    (folder / "sites").mkdir(parents=True)
    for part in ("root", "qemu"):
        os.symlink(emulated_arm64.folder / part, folder / part)
    os.symlink(emulated_arm64.site("litert"), folder / "sites" / "onnxruntime")
    stamp = dict(emulated_arm64.stamp, runtimes={"onnxruntime": {"numpy": "?"}})
    (folder / "stamp.json").write_text(json.dumps(stamp))
    monkeypatch.setenv("XCEPTION_EDGE_CACHE", str(tmp_path / "cache"))
    out, _, _ = converted_all
    code, output, data = _bench_json([str(out / "arm64-onnxruntime-int8"), "--device", "emulated:arm64"], tmp_path)
    assert code == 2 and data is None, output
    last = [x for x in output.splitlines() if x.strip()][-1]
    assert "onnxruntime is not installed" in last and "-m pip install onnxruntime numpy" in last, output
    assert not np.any([p.name.startswith("xe-device-") for p in tmp_path.iterdir()])


def test_device_setup_reports_the_versions(emulated_arm64, tmp_path):
    r = CliRunner().invoke(cli, ["device", "setup", "emulated:arm64", "--runtime", "litert", "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    stamp = json.loads((tmp_path / "s.json").read_text())
    assert stamp["python"].startswith("3.11.") and stamp["qemu"].split(":")[-1].startswith("10.")
    assert stamp["runtimes"]["litert"]["ai-edge-litert"] == dict(backends.get("litert").emulated_versions)["ai-edge-litert"]


@pytest.mark.parametrize("args", [["local"], ["ssh://pi"], ["emulated:arm64", "--runtime", "tensorrt"], ["emulated:x86"]])
def test_device_setup_bad_input_is_exit_2(args):
    r = CliRunner().invoke(cli, ["device", "setup", *args])
    assert r.exit_code == 2 and len([x for x in r.output.splitlines() if x.strip()]) == 1, r.output


@pytest.mark.slow
def test_interrupted_device_build_leaves_nothing(tmp_path):
    """Ctrl-C while the emulated device is being built (a fresh cache): exit 130, and neither the
    device's folder nor a temporary one is left."""
    import signal
    import time

    env = dict(os.environ, XCEPTION_EDGE_CACHE=str(tmp_path))
    exe = Path(sys.executable).with_name("xception-edge")
    proc = subprocess.Popen(
        [str(exe), "device", "setup", "emulated:arm64", "--runtime", "litert"], env=env, stderr=subprocess.PIPE, text=True
    )
    devices = tmp_path / "devices"
    deadline = time.time() + 120
    while time.time() < deadline and not list(devices.glob(f".xe-tmp-{emulated.NAME}-*/root")):
        time.sleep(0.05)
    assert list(devices.glob(f".xe-tmp-{emulated.NAME}-*")), "the build never started staging"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert sorted(p.name for p in devices.iterdir()) == [f".{emulated.NAME}.lock"], err


# ------------------------------------------- what comes back from a device is checked first
@pytest.mark.parametrize(
    "written",
    ["not json {", "[1, 2]", '{"latency": {}}', '{"error": "boom"}', '{"host": {"machine": "aarch64"}}'],
)
def test_a_malformed_device_result_is_one_line_device_failed(written, converted_all, tmp_path):
    from xception_edge.artifact import read_manifest
    from xception_edge.devices import remote
    from xception_edge.devices.spec import parse as parse_spec
    from xception_edge.devices.transport import Completed, DeviceFailed

    device = remote.open_device(parse_spec("local"), "litert", python=None, keep=False, cache=None)
    manifest = read_manifest(converted_all[0] / "litert-fp32")
    path = tmp_path / "result.json"
    path.write_text(written, encoding="utf-8")
    with pytest.raises(DeviceFailed) as info:
        remote._result(device, manifest, Completed("", "", 0), path)
    assert "\n" not in str(info.value) and str(info.value).startswith("local: the device-side runner")


@pytest.mark.parametrize(
    "outputs", [np.zeros((2, 3)), np.zeros((4, 5)), np.full((4, 3), np.nan), np.array(["a"] * 12).reshape(4, 3)]
)
def test_device_outputs_of_the_wrong_shape_or_not_finite_are_refused(outputs, tmp_path):
    from xception_edge.devices import remote
    from xception_edge.devices.spec import parse as parse_spec
    from xception_edge.devices.transport import DeviceFailed

    device = remote.open_device(parse_spec("local"), "litert", python=None, keep=False, cache=None)
    np.save(tmp_path / "outputs.npy", outputs, allow_pickle=False)
    with pytest.raises(DeviceFailed, match=r"expected \(4, 3\) finite numbers"):
        remote._outputs(device, tmp_path / "outputs.npy", 4, 3)
    np.save(tmp_path / "good.npy", np.full((4, 3), 1 / 3, np.float32), allow_pickle=False)
    assert remote._outputs(device, tmp_path / "good.npy", 4, 3).shape == (4, 3)


def _runners_in(folder: Path) -> list[int]:
    """The processes running the device-side runner with their working folder under ``folder``."""
    found = subprocess.run(["pgrep", "-f", "runner.pyz"], capture_output=True, text=True).stdout.split()
    pids = []
    for pid in map(int, found):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(folder)):
                pids.append(pid)
        except OSError:
            pass
    return pids


def _alive(pid: int) -> bool:
    """Running (a zombie has stopped: a container's init may be slow to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_ctrl_c_during_an_emulated_run_stops_it_and_leaves_nothing(converted_all, emulated_arm64, tmp_path):
    """SIGINT while the device runs: exit 130, the emulated process is gone, and so is the
    device's temporary folder (under TMPDIR, here the test's folder)."""
    import signal
    import time

    out, _, _ = converted_all
    exe = Path(sys.executable).with_name("xception-edge")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    args = [str(exe), "bench", str(out / "arm64-litert-int8"), "--device", "emulated:arm64", "--runs", "1000000"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (pids := _runners_in(tmp_path)) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    assert pids, "the device-side runner never started under TMPDIR"
    time.sleep(1.0)  # inside the timing loop
    running = [d for d in tmp_path.iterdir() if d.name.startswith("xe-device-")]
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and running, output
    time.sleep(0.5)
    left = [p for p in pids if _alive(p)]
    assert not [d for d in running if d.exists()] and not left, subprocess.run(
        ["ps", "-o", "pid,ppid,stat,cmd", *map(str, left)], capture_output=True, text=True
    ).stdout
    assert "Traceback" not in output


def test_full_temporary_disk_is_one_line_and_exit_2(converted_all, tmp_path):
    """TMPDIR on a 64 KiB tmpfs (mounted in a private mount namespace: root, or `unshare -r -m`
    for anyone where user namespaces are allowed): exit 2, one line saying the disk is full, and
    nothing left there."""
    out, _, _ = converted_all
    small = tmp_path / "small"
    small.mkdir()
    exe = Path(sys.executable).with_name("xception-edge")
    inner = (
        f"mount -t tmpfs -o size=64k tmpfs {small} && TMPDIR={small} {exe} bench {out / 'arm64-litert-int8'} "
        f"--device local --device-python {sys.executable} --runs 1; code=$?; ls -A {small}; exit $code"
    )
    if subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -r -m is refused)")
    proc = subprocess.run(["unshare", "-r", "-m", "sh", "-c", inner], capture_output=True, text=True, timeout=300)
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip() and not x.startswith(("WARNING", "I0000"))]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is full" in lines[-1] and str(small) in lines[-1] and "Traceback" not in proc.stderr, lines
    assert not proc.stdout.strip(), proc.stdout  # `ls -A` of the tmpfs after the run: empty
