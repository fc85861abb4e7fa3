"""`bench --device ssh://…` through a real OpenSSH server on 127.0.0.1 (tests/sshd.py): the
device is this machine reached as a remote one, by a ~/.ssh/config-style alias and by address.
The sshd gives its sessions a $TMPDIR of their own, so what a run leaves on the "device" is
exactly what a test sees there. Needs openssh-server (.ci/system-deps installs it as root)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import older_python
from sshd import ALIAS, client_config, free_port, keygen, know_host, running_sshd, sshd_device  # noqa: F401

from xception_edge.cli import cli

XE = Path(sys.executable).with_name("xception-edge")
DEVICE = f"ssh://{ALIAS}"
FAST = ["--runs", "3", "--warmup", "1", "--cooldown", "0"]  # no rest between rounds: a quick test


@pytest.fixture
def ssh(sshd_device, monkeypatch, tmp_path):  # noqa: F811
    """The sshd, with XCEPTION_EDGE_SSH_CONFIG pointing at its client config and this host's
    temporary folders in tmp_path/host-tmp (checked empty after a run, like the device's)."""
    monkeypatch.setenv("XCEPTION_EDGE_SSH_CONFIG", str(sshd_device.config))
    (tmp_path / "host-tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "host-tmp"))
    return sshd_device


def _bench(folder: Path, device: str, *extra: str, python: str = sys.executable):
    return CliRunner().invoke(cli, ["bench", str(folder), "--device", device, "--device-python", python, *extra])


def _error_line(r) -> str:
    """The run's one error line (stderr's lines that start with ``error:`` must be exactly one),
    after checking that nothing printed a traceback."""
    assert "Traceback" not in r.output, r.output
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, r.output
    return errors[0][len("error: ") :]


def _left(ssh, tmp_path: Path) -> list[str]:
    return sorted(p.name for p in [*ssh.tmpdir.iterdir(), *(tmp_path / "host-tmp").iterdir()])


def _sessions(ssh) -> tuple[int, int]:
    """How many commands and SFTP (scp) sessions the sshd has started so far, from its log."""
    log = ssh.log.read_text(errors="replace")
    return log.count("Starting session: command"), log.count("Starting session: subsystem 'sftp'")


@pytest.mark.parametrize("form", ["alias", "address"])
def test_bench_over_ssh(form, ssh, converted_all, tmp_path):
    """By the config's alias and as ssh://USER@127.0.0.1:PORT: the runner ran in the device's
    Python through this sshd, its outputs match the host's exactly, and nothing is left."""
    out, _, _ = converted_all
    device = DEVICE if form == "alias" else ssh.url
    before = _sessions(ssh)
    r = _bench(out / "arm64-litert-int8", device, *FAST, "--json", "-")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["device"]["transport"] == "ssh" and data["device"]["spec"] == device
    assert data["device"]["python"] == sys.executable and data["host"]["python_executable"] == sys.executable
    assert data["host"]["machine"] == platform.machine()
    p = data["parity"]
    assert p["top1_agreement"] == 1.0 and p["max_step_diff"] == 0 and p["passed"], p  # same machine, same runtime
    assert data["latency"]["runs"] == 3 and data["latency"]["p50_ms"] > 0
    commands, copies = _sessions(ssh)
    assert commands >= before[0] + 3 and copies >= before[1] + 4  # mktemp, run, rm; four puts, two gets
    assert _left(ssh, tmp_path) == []


def test_keep_leaves_the_device_folder_and_prints_it(ssh, converted_all, tmp_path):
    out, _, _ = converted_all
    r = _bench(out / "arm64-litert-int8", DEVICE, *FAST, "--keep")
    assert r.exit_code == 0, r.output
    found = re.search(rf"kept the device's folder \({re.escape(DEVICE)}\): (\S+)", r.stderr)
    assert found, r.stderr
    kept = Path(found.group(1))
    try:
        assert kept.parent == ssh.tmpdir  # mktemp honoured the device's $TMPDIR
        names = sorted(p.name for p in kept.iterdir())
        assert names == [".pid", "artifact", "inputs.npy", "outputs.npy", "request.json", "result.json", "runner.pyz", "tmp"]
        assert (kept / "artifact" / "manifest.json").is_file()
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    assert _left(ssh, tmp_path) == []


def test_device_python_without_the_runtime_is_one_line_and_exit_2(ssh, converted_all, tmp_path):
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    py = str(tmp_path / "bare" / "bin" / "python")
    out, _, _ = converted_all
    r = _bench(out / "arm64-litert-int8", DEVICE, *FAST, python=py)
    assert r.exit_code == 2, r.output
    line = _error_line(r)
    assert line == f"{DEVICE}: numpy is not installed for {py}; install it there with: {py} -m pip install ai-edge-litert numpy"
    assert _left(ssh, tmp_path) == []


def test_device_python_too_old_is_one_line_and_exit_2(ssh, converted_all, tmp_path):
    old = older_python()
    if old is None:
        pytest.skip("no Python older than 3.9 on this machine (pyenv install 3.8 gives one)")
    out, _, _ = converted_all
    r = _bench(out / "arm64-litert-int8", DEVICE, *FAST, python=old)
    assert r.exit_code == 2, r.output
    line = _error_line(r)
    assert line.startswith(f"{DEVICE}: its Python {old} is 3.") and "needs Python >= 3.9" in line, line
    assert _left(ssh, tmp_path) == []


def _unreachable(ssh, tmp_path: Path, case: str, monkeypatch) -> tuple[str, str]:
    """(device, what ssh says) for a closed port, a key the server does not accept, and a
    server whose host key is unknown; the last two with a client config of their own."""
    if case == "closed port":
        return f"ssh://{ssh.user}@127.0.0.1:{free_port()}", "Connection refused"
    if case == "refused key":
        (tmp_path / "known_hosts").write_text((ssh.folder / "known_hosts").read_text())
        config = client_config(tmp_path, ssh.port, ssh.user, keygen(tmp_path / "stranger"))
        expect = "Permission denied (publickey)"
    else:
        (tmp_path / "known_hosts").write_text("")
        config = client_config(tmp_path, ssh.port, ssh.user, ssh.folder / "user_key")
        expect = "Host key verification failed"
    monkeypatch.setenv("XCEPTION_EDGE_SSH_CONFIG", str(config))
    return DEVICE, expect


@pytest.mark.parametrize("case", ["closed port", "refused key", "unknown host key"])
def test_unreachable_device_is_one_line_and_exit_2_without_waiting(case, ssh, converted_all, tmp_path, monkeypatch):
    """BatchMode: a refused key or an unknown host key fails at once, never asks."""
    device, expect = _unreachable(ssh, tmp_path, case, monkeypatch)
    out, _, _ = converted_all
    t0 = time.monotonic()
    r = _bench(out / "arm64-litert-int8", device, *FAST)
    assert time.monotonic() - t0 < 15 and r.exit_code == 2, r.output
    line = _error_line(r)
    assert line.startswith(f"{device}: ") and expect in line, line
    assert _left(ssh, tmp_path) == []


def _runner_pid(folder: Path, timeout: float = 60) -> int:
    """The device-side runner's pid once it runs (its .pid in the device's folder, and a live
    process whose command line names runner.pyz)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pidfile in folder.glob("xe-device-*/.pid"):
            text = pidfile.read_text().strip() if pidfile.exists() else ""
            if text.isdigit() and _is_runner(int(text)):
                return int(text)
        time.sleep(0.05)
    raise AssertionError(f"the runner did not start within {timeout:.0f} s")


def _is_runner(pid: int) -> bool:
    try:
        return b"runner.pyz" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.parametrize("target", ["process", "group"])
def test_ctrl_c_stops_the_remote_runner_and_removes_its_folder(target, ssh, converted_all, tmp_path):
    """SIGINT to the CLI alone, and to its process group (a terminal's Ctrl-C, which also hits
    ssh): exit 130, the runner on the device is stopped and its folder removed, here and there."""
    out, _, _ = converted_all
    env = dict(os.environ, XCEPTION_EDGE_SSH_CONFIG=str(ssh.config), TMPDIR=str(tmp_path / "host-tmp"))
    argv = [str(XE), "bench", str(out / "arm64-litert-int8"), "--device", DEVICE, "--device-python", sys.executable]
    with (tmp_path / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [*argv, "--runs", "100000", "--warmup", "1"], env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
        try:
            pid = _runner_pid(ssh.tmpdir)
            time.sleep(0.3)  # into the timing loop
            (os.killpg if target == "group" else os.kill)(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = (tmp_path / "stderr").read_text()
    assert code == 130 and "Traceback" not in stderr, stderr
    deadline = time.monotonic() + 5
    while _is_runner(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _is_runner(pid)
    if alive:  # the test's own leftover: stop it before failing
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"the device-side runner {pid} still runs"
    assert _left(ssh, tmp_path) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only: the test's sshd must see the mount), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("a tmpfs that the test's sshd sees needs root to mount")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs", str(tiny)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield tiny
    subprocess.run(["umount", str(tiny)], check=True)


def test_full_device_disk_is_one_line_and_exit_2(ssh, converted_all, tmp_path, tiny_tmpfs):
    """A second sshd whose sessions' $TMPDIR is a 64 KiB tmpfs; the artifact alone is larger."""
    out, _, _ = converted_all
    with running_sshd(ssh.folder, tiny_tmpfs, name="sshd-full") as port:
        know_host(ssh.folder, port)
        device = f"ssh://{ssh.user}@127.0.0.1:{port}"
        r = _bench(out / "arm64-litert-int8", device, *FAST)
    assert r.exit_code == 2, r.output
    line = _error_line(r)
    assert line.startswith(f"{device}: the disk holding {tiny_tmpfs} is full; free space there"), line
    assert list(tiny_tmpfs.iterdir()) == [] and _left(ssh, tmp_path) == []


def test_evaluate_and_gate_over_ssh(ssh, converted_all, tmp_path):
    """`evaluate --device ssh://…`: every artifact's device row next to its host row (the same
    numbers here: the device is this machine), parity exact; `gate` gates the device row's latency
    when latency_host names that device (a real one: it can fail) and its min_device_agreement."""
    out, _, (model, _, val) = converted_all
    arts = tmp_path / "arts"
    for name in ("arm64-litert-int8", "x86-onnxruntime-int8"):
        shutil.copytree(out / name, arts / name)
    report = tmp_path / "report"
    args = ["evaluate", "--model", model, "--artifacts", arts, "--data", val, "--report", report]
    r = CliRunner().invoke(cli, [str(a) for a in [*args, "--device", DEVICE, "--device-python", sys.executable, *FAST]])
    assert r.exit_code == 0, r.output
    data = json.loads((report / "report.json").read_text())
    hosts = {row["name"]: row for row in data["artifacts"]}
    for row in data["devices"]:
        assert row["device"]["transport"] == "ssh" and row["device"]["spec"] == DEVICE and row["latency_emulated"] is False
        assert row["device_host"]["machine"] == platform.machine() and row["device_host"]["cpu"] == data["host"]["cpu"]
        assert row["parity"]["top1_agreement"] == 1.0 and row["parity"]["max_step_diff"] == 0
        assert (row["top1"], row["flipped"]) == (hosts[row["name"]]["top1"], hosts[row["name"]]["flipped"])
    # nothing of the device's left (TensorFlow's autograph files in this host's tmp are not ours)
    assert not list(ssh.tmpdir.iterdir()) and not list((tmp_path / "host-tmp").glob("xe-device-*"))
    assert "## On the device" in (report / "report.md").read_text()

    def gate(limit: float) -> tuple[int, dict]:
        (tmp_path / "gates.toml").write_text(
            "".join(f'[{n}]\nmax_top1_drop_pp = 100\nmax_p50_latency_ms = {limit}\nlatency_host = "{ALIAS}"\n' for n in hosts)
        )
        g = CliRunner().invoke(cli, ["gate", str(report / "report.json"), "--gates", str(tmp_path / "gates.toml"), "--json", "-"])
        results = {(x["name"], x["gate"]): x for x in json.loads(g.stdout)["results"]}
        return g.exit_code, results

    code, results = gate(10_000)
    name = f"arm64-litert-int8@{DEVICE}"
    assert code == 0 and results[(name, "max_p50_latency_ms")]["note"] == "", results
    assert results[(name, "min_device_agreement")]["value"] == 1.0
    assert results[("arm64-litert-int8", "max_p50_latency_ms")]["note"].startswith("skipped")  # the host row
    code, results = gate(0.0001)
    assert code == 1 and not results[(name, "max_p50_latency_ms")]["passed"]
