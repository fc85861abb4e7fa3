"""`evaluate --executor ray --device SPEC`: the host part runs on the session's two-node Ray cluster
(tests/raycluster.py), then every artifact runs on an ssh device (a real sshd on 127.0.0.1,
tests/sshd.py) from the driver; its device rows equal a local `evaluate --device`'s. Also: a
device row is reused with --resume, a shard whose top-5 is not the artifact's outputs here stops
the run (exit 1), bad device input fails before any Ray work, and `--executor ray` without an
address starts a local Ray in the command's own process that is gone when it exits.

Data: 3 classes x 12 images plus one file that is not an image, in shards of 32 (2 shards)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from sshd import ALIAS, sshd_device  # noqa: F401
from test_scale_evaluate import ACCURACY, accuracy, args, evaluate, local_run, on_ray, one_line_error, report

pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[ray]'")

TARGETS = ("arm64-litert-int8", "x86-onnxruntime-int8")
DEVICE = f"ssh://{ALIAS}"
ON_DEVICE = ("--device", DEVICE, "--device-python", sys.executable, "--rounds", 1, "--cooldown", 0)


@pytest.fixture(scope="module")
def base(converted_all, tmp_path_factory):
    """(model, artifacts folder, data folder, a plain local run's report folder)."""
    return local_run(converted_all, tmp_path_factory.mktemp("scale-device"), TARGETS, per_class=12)


@pytest.fixture(scope="module")
def device_runs(base, sshd_device, ray_cluster):  # noqa: F811
    """The same data evaluated with --device, locally and on Ray: (local report folder, Ray report
    folder, the Ray run's output, the sshd)."""
    model, artifacts, data, _ = base
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XCEPTION_EDGE_SSH_CONFIG", str(sshd_device.config))
        local = data.parent / "local-device"
        r = evaluate(model, artifacts, data, local, *ON_DEVICE)
        assert r.exit_code == 0, r.output
        on_ray_ = data.parent / "ray-device"
        t0 = time.perf_counter()
        r = evaluate(model, artifacts, data, on_ray_, *on_ray(ray_cluster), *ON_DEVICE)
        assert r.exit_code == 0, r.output
        print(f"the Ray --device run took {time.perf_counter() - t0:.1f} s")
    return local, on_ray_, r.output, sshd_device


def _device_rows(folder: Path) -> dict:
    """Each device row's accuracy fields and parity, by artifact."""
    return {d["name"]: {k: d.get(k) for k in (*ACCURACY, "parity")} for d in report(folder)["devices"]}


def test_device_rows_equal_a_local_device_run(base, device_runs):
    _, _, _, plain = base
    local, on_ray_, output, ssh = device_runs
    assert accuracy(on_ray_) == accuracy(local) == accuracy(plain)  # the host rows
    got, want = _device_rows(on_ray_), _device_rows(local)
    assert set(got) == set(TARGETS) and got == want
    for name, row in got.items():
        assert row["images"] == 37 and row["parity"]["images"] == 36, name  # the broken file: a miss, not sent
        p = row["parity"]
        assert p["top1_agreement"] == 1.0 and p["max_step_diff"] == 0 and p["passed"], (name, p)  # same machine, runtime
    rep = report(on_ray_)
    assert rep["settings"]["executor"] == "ray" and (rep["timing"]["ray"]["shards"], rep["timing"]["ray"]["computed"]) == (2, 2)
    for d in rep["devices"]:
        assert d["device"]["spec"] == DEVICE and d["device"]["transport"] == "ssh" and d["latency_emulated"] is False
        assert d["latency"]["runs"] == 3 and d["latency"]["rounds"] == 1 and d["reused"] is False
    assert output.count("the device's parity reference") == len(TARGETS)
    assert f"{DEVICE}: decoding the 37 images here, for the device" in output
    md = (on_ray_ / "report.md").read_text()
    assert "## On the device" in md and f"for the device rows, on {DEVICE}" in md
    assert list(ssh.tmpdir.iterdir()) == []  # nothing left on the device


def test_resume_reuses_device_rows_without_opening_the_device(base, device_runs, ray_cluster, monkeypatch):
    model, artifacts, data, _ = base
    local, on_ray_, _, ssh = device_runs
    out = data.parent / "ray-device-resume"
    shutil.copytree(on_ray_, out)
    before = report(out)
    log = ssh.log.read_text(errors="replace").count("Starting session")
    monkeypatch.setenv("XCEPTION_EDGE_SSH_CONFIG", str(ssh.config))
    r = evaluate(model, artifacts, data, out, *on_ray(ray_cluster), *ON_DEVICE, "--resume")
    assert r.exit_code == 0, r.output
    again = report(out)
    assert [d["reused"] for d in again["devices"]] == [True] * len(TARGETS)
    assert _device_rows(out) == _device_rows(local)
    assert [d["latency"] for d in again["devices"]] == [d["latency"] for d in before["devices"]]
    assert ssh.log.read_text(errors="replace").count("Starting session") == log  # the device was not opened


def test_a_shard_unlike_the_artifact_here_stops_the_run(base, device_runs, ray_cluster, monkeypatch):
    """A shard whose stored probabilities differ by one float step from the artifact's outputs on
    this host: exit 1 naming the artifact, before anything runs on the device."""
    model, artifacts, data, _ = base
    _, on_ray_, _, ssh = device_runs
    out = data.parent / "ray-device-tampered"
    shutil.copytree(on_ray_, out)
    name = TARGETS[1]
    for result in (out / "results").glob(f"{name}-*.json"):
        result.unlink()  # recompute this artifact's rows, from the shards kept for --resume
    shard = sorted((out / "shards").glob("*.npz"))[0]
    with np.load(shard) as z:
        arrays = dict(z)
    j = json.loads(str(arrays["meta"][()]))["names"].index(name)
    arrays[f"p{j}"][3, 0] = np.nextafter(arrays[f"p{j}"][3, 0], np.float32(2))
    with open(shard, "wb") as f:
        np.savez(f, **arrays)
    log = ssh.log.read_text(errors="replace").count("Starting session")
    monkeypatch.setenv("XCEPTION_EDGE_SSH_CONFIG", str(ssh.config))
    r = evaluate(model, artifacts, data, out, *on_ray(ray_cluster), *ON_DEVICE, "--resume")
    assert r.exit_code == 1, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {name}: its top-5 outputs on this host differ from the Ray shards' on 1 of 36 images (a Ray node runs it "
        "with another CPU's kernels or another runtime version); run `evaluate --device` without --executor ray, or on "
        "nodes like this host"
    ], r.output
    assert ssh.log.read_text(errors="replace").count("Starting session") == log


@pytest.mark.parametrize(
    "extra, words",
    [
        (("--device", "ssh://no host"), "--device 'ssh://no host': 'no host' is not a host name"),
        (("--device", "emulated:x86"), "--device 'emulated:x86': the emulated architecture is arm64"),
        (("--device", DEVICE, "--cooldown", "-1"), "--cooldown -1.0 must be between 0 and 3600 seconds"),
        (("--device", DEVICE, "--rounds", "9"), "--rounds 9 is more than --runs 3"),
        (("--keep",), "--keep, --rounds and --cooldown are for a device run"),
    ],
)
def test_bad_device_input_fails_before_any_ray_work(tmp_path, extra, words):
    """Nothing exists (model, artifacts, data) and the Ray address is unreachable: the device's
    error comes first, fast, and writes nothing."""
    from raycluster import free_port

    t0 = time.perf_counter()
    ray = ("--executor", "ray", "--ray-address", f"127.0.0.1:{free_port()}")
    line = one_line_error(evaluate("m.keras", tmp_path / "a", tmp_path / "val", tmp_path / "r", *ray, *extra))
    assert words in line and "ray" not in line.lower(), line
    assert time.perf_counter() - t0 < 10
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ a local Ray
def _processes_using(folder: Path) -> list[str]:
    """The processes (other than this one) whose command line names ``folder`` or that have a file
    under it open: every process of a Ray session under it (a worker retitles itself
    ``ray::…``, but writes its log files in the session's folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            files = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if str(folder) in cmdline or any(f.startswith(f"{folder}/") for f in files):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.mark.slow
def test_local_ray_in_the_commands_own_process(base):
    """No --ray-address, no RAY_ADDRESS: the command starts a Ray of its own (in a temporary
    folder of its own here, RAY_TMPDIR) with this process's CPUs, its report's accuracy equals a
    local run's, and neither a process of that Ray nor its token file outlives the command."""
    model, artifacts, data, plain = base
    temp = Path(tempfile.mkdtemp(prefix="xe-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    home = temp / "home"  # where Ray would leave its ~/.ray/auth_token
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_TMPDIR": str(temp), "HOME": str(home)}
    out = data.parent / "local-ray"
    cmd = [sys.executable, "-m", "xception_edge", *args(model, artifacts, data, out, "--executor", "ray", "--shard-size", 32)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output
        assert accuracy(out) == accuracy(plain)
        ray = report(out)["timing"]["ray"]
        assert (ray["shards"], ray["computed"], ray["address"]) == (2, 2, None)
        assert len(ray["nodes"]) == 1 and ray["nodes"][0]["images"] == 37
        sessions = list((temp / "ray").glob("session_2*"))
        assert len(sessions) == 1, "the command did not start its own Ray under RAY_TMPDIR"
        found = re.search(r"InitialConfigResources: \{[^}]*\bCPU: (\d+)", (sessions[0] / "logs" / "raylet.out").read_text())
        assert found and int(found.group(1)) == len(os.sched_getaffinity(0)), "the local Ray has another number of CPUs"
        deadline = time.monotonic() + 10  # the command has exited: its Ray's processes go with it
        while _processes_using(temp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_using(temp) == []
        assert not (home / ".ray").exists(), "the local Ray left its token file behind"
    finally:
        proc.kill()
        shutil.rmtree(temp, ignore_errors=True)
