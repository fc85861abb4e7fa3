"""The trust issue, end to end through the real `xception-edge` entry point: output folders are
locked, nothing is written outside them or left half-written, telemetry never leaves the machine,
and every failure is one line with the right exit code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from xception_edge.artifact import LOCK, TMP_PREFIX, output_lock

EXE = str(Path(sys.executable).with_name("xception-edge"))


def cli(*args, env=None, umask=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    """The console script in a child process: SIGINT at its default whatever launched the suite."""

    def pre():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if umask is not None:
            os.umask(umask)

    return subprocess.run(
        [EXE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=pre,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def one_error_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return lines[0]


# ---------------------------------------------------------------- the output folder
def test_profile_name_cannot_write_outside_out(small_model, tmp_path):
    model, train, _ = small_model
    victim = tmp_path / "victim" / "important"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("precious")
    prof = tmp_path / "evil.toml"
    prof.write_text('name = "../victim/important"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\n')
    r = cli("convert", "--model", model, "--target", prof, "--calibration", train, "--out", tmp_path / "out", "--force")
    assert r.returncode == 2, r.stderr
    assert "not a plain name" in one_error_line(r)
    assert (victim / "keep.txt").read_text() == "precious" and sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["convert", "evaluate", "inspect"])
def test_a_second_run_on_a_locked_folder_fails_at_once(small_model, tmp_path, command):
    model, train, val = small_model
    out = tmp_path / "out"
    args = {
        "convert": ["convert", "--model", model, "--target", "litert-fp32", "--calibration", train, "--out", out],
        "evaluate": ["evaluate", "--model", model, "--artifacts", tmp_path, "--data", val, "--report", out],
        "inspect": ["inspect", tmp_path, "--model", model, "--calibration", train, "--report", out],
    }[command]
    with output_lock(out, "--out"):
        assert (out / LOCK).read_text().strip() == str(os.getpid())
        t0 = time.monotonic()
        r = cli(*args)
        assert time.monotonic() - t0 < 60  # no waiting, and no framework loaded first
        assert r.returncode == 2
        line = one_error_line(r)
        assert "in use by another xception-edge run" in line and f"pid {os.getpid()}" in line
    assert sorted(out.iterdir()) == [] if out.exists() else True  # our lock file is gone once released


def test_stale_temporaries_of_a_killed_run_are_removed(small_model, tmp_path):
    model, train, _ = small_model
    out = tmp_path / "out"
    stale = out / f"{TMP_PREFIX}litert-fp32-abc123"
    stale.mkdir(parents=True)
    (stale / "model.tflite").write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    (out / "keep").mkdir()
    r = cli("convert", "--model", model, "--target", "litert-fp32", "--calibration", tmp_path / "missing", "--out", out)
    assert r.returncode == 2 and "missing" in one_error_line(r)
    assert "removed 1 temporary file(s) left by an interrupted run" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep"]


def test_failed_run_leaves_no_out_folder_and_json_is_checked_first(small_model, tmp_path):
    model, train, _ = small_model
    r = cli(
        "convert",
        "--model",
        model,
        "--target",
        "arm64-litert-int8",
        "--calibration",
        tmp_path / "nope",
        "--out",
        tmp_path / "out",
    )
    assert r.returncode == 2 and not (tmp_path / "out").exists()
    (tmp_path / "dir").mkdir()
    r = cli(
        "convert",
        "--model",
        model,
        "--target",
        "litert-fp32",
        "--calibration",
        train,
        "--out",
        tmp_path / "out",
        f"--json={tmp_path / 'dir'}",
    )
    assert r.returncode == 2 and "--json" in one_error_line(r) and "is a folder" in one_error_line(r)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    r = cli(
        "convert",
        "--model",
        model,
        "--target",
        "litert-fp32",
        "--calibration",
        train,
        "--out",
        tmp_path / "out",
        f"--json={tmp_path / 'file' / 'sub.json'}",
    )
    assert r.returncode == 2 and "--json" in one_error_line(r)
    assert not (tmp_path / "out").exists()


def _unshare_prefix() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is not installed")
    probe = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    if subprocess.run([*probe, "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow a private mount namespace")
    return probe


def test_a_full_disk_fails_the_target_with_one_line_and_exit_1(small_model, tmp_path):
    """A real full file system: a 64 KiB tmpfs in a private mount namespace."""
    model, train, _ = small_model
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {disk} && exec {EXE} convert --model {model} --target litert-fp32 "
        f"--no-verify --out {disk}/out"
    )
    r = subprocess.run(
        [*_unshare_prefix(), "sh", "-c", script], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 1, r.stderr
    line = one_error_line(r)
    assert "litert-fp32" in line and "disk is full" in line
    assert list(disk.iterdir()) == []  # the namespace's tmpfs is gone; nothing reached the real folder


# ---------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("delay", [3.0, 8.0])
def test_ctrl_c_during_convert_exits_130_and_leaves_nothing(small_model, tmp_path, delay):
    model, train, _ = small_model
    out = tmp_path / "out"

    def pre():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    p = subprocess.Popen(
        [
            EXE,
            "convert",
            "--model",
            str(model),
            "--target",
            "arm64-litert-int8",
            "--target",
            "x86-openvino-int8",
            "--calibration",
            str(train),
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=pre,
    )
    deadline = time.monotonic() + 60
    while not (out / LOCK).exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()


def test_an_interrupt_swallowed_by_a_framework_still_stops_the_commit(tmp_path):
    """Frameworks call back into Python from C++ and may swallow the KeyboardInterrupt there; the
    handler remembers it, and nothing is renamed into place afterwards."""
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from pathlib import Path
        from xception_edge import interrupts
        from xception_edge.artifact import staged_dir
        interrupts.install()
        try:
            with staged_dir(Path({str(tmp_path / "art")!r}), force=False) as s:
                (s / 'model.tflite').write_bytes(b'x')
                try:  # what a swallowing framework does
                    print('ready', flush=True)
                    time.sleep(30)
                except BaseException:
                    pass
                print('swallowed', flush=True)
        except KeyboardInterrupt:
            sys.exit(interrupts.exit_code())
        sys.exit(0)
    """)
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # as a background shell does
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    rest = p.stdout.read()
    assert p.wait(timeout=20) == 130
    assert "swallowed" in rest
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- telemetry and permissions
SITE = """
import json, os, socket
_log = os.environ["XE_NET_LOG"]
def _local(host):
    return isinstance(host, str) and (host in ("localhost", "") or host.startswith(("127.", "::1", "/")))
def _record(what, host):
    with open(_log, "a") as f:
        f.write(json.dumps([what, str(host), os.getpid()]) + "\\n")
_connect = socket.socket.connect
def connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(host):
        _record("connect", host)
        raise OSError("network disabled by the test")
    return _connect(self, address)
socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: (connect(self, address), 0)[1]
_gai = socket.getaddrinfo
def getaddrinfo(host, *a, **k):
    if not _local(host) and host is not None:
        _record("getaddrinfo", host)
        raise socket.gaierror("network disabled by the test")
    return _gai(host, *a, **k)
socket.getaddrinfo = getaddrinfo
"""


@pytest.fixture(scope="module")
def openvino_run(small_model, tmp_path_factory):
    """convert to OpenVINO int8 (OVC + NNCF) outside CI, with a fresh HOME, umask 027, and every
    non-loopback connection recorded and refused."""
    model, train, val = small_model
    root = tmp_path_factory.mktemp("net")
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    log = root / "net.log"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")}
    env.update(
        HOME=str(root / "home"),
        XE_NET_LOG=str(log),
        PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    )
    (root / "home").mkdir()
    out = root / "out"
    r = cli(
        "convert",
        "--model",
        model,
        "--target",
        "x86-openvino-int8",
        "--target",
        "openvino-fp32",
        "--calibration",
        train,
        "--num-calibration",
        20,
        "--verify-data",
        val,
        "--out",
        out,
        env=env,
        umask=0o027,
    )
    return r, log, out, root / "home"


def test_no_connection_leaves_the_machine_during_convert(openvino_run):
    r, log, out, home = openvino_run
    assert r.returncode == 0, r.stderr
    attempts = log.read_text().splitlines() if log.exists() else []
    assert attempts == []
    assert not (home / "intel").exists()  # no telemetry client id written into the user's home


def test_artifacts_get_the_umask_permissions(openvino_run):
    r, _, out, _ = openvino_run
    assert r.returncode == 0, r.stderr
    for target in ("x86-openvino-int8", "openvino-fp32"):
        folder = out / target
        assert oct(folder.stat().st_mode & 0o777) == oct(0o750)
        assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {oct(0o640)}


def test_bench_refuses_a_tampered_manifest(openvino_run, tmp_path):
    _, _, out, _ = openvino_run
    art = tmp_path / "art"
    shutil.copytree(out / "openvino-fp32", art)
    m = json.loads((art / "manifest.json").read_text())
    m.pop("files")
    (art / "manifest.json").write_text(json.dumps(m))
    r = cli("bench", art, "--runs", 1)
    assert r.returncode == 2 and "'files' must be" in one_error_line(r)
    shutil.copy(art / "model.xml", tmp_path / "other.xml")
    m["files"] = json.loads((out / "openvino-fp32" / "manifest.json").read_text())["files"]
    m["model_file"] = "../other.xml"
    (art / "manifest.json").write_text(json.dumps(m))
    r = cli("bench", art, "--runs", 1)
    assert r.returncode == 2 and "outside" in one_error_line(r)


# ---------------------------------------------------------------- messages that blamed the wrong thing
@pytest.mark.parametrize(
    "args,needle",
    [
        (["--weights", "imagenet", "--input-size", "71"], "take 299x299"),
        (["--weights", "none", "--num-classes", "0"], "--num-classes 0 must be at least 2"),
        (["--weights", "none", "--num-classes", "-1"], "--num-classes -1 must be at least 2"),
    ],
)
def test_keras_xception_options_blame_the_option_not_the_internet(tmp_path, args, needle):
    r = cli("convert", "--model", "keras:xception", *args, "--target", "litert-fp32", "--no-verify", "--out", tmp_path / "o")
    assert r.returncode == 2
    line = one_error_line(r)
    assert needle in line and "internet" not in line


def test_truncated_keras_file_is_called_truncated(small_model, tmp_path):
    model, _, _ = small_model
    cut = tmp_path / "cut.keras"
    data = Path(model).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    r = cli("convert", "--model", cut, "--target", "litert-fp32", "--no-verify", "--out", tmp_path / "o")
    assert r.returncode == 2
    line = one_error_line(r)
    assert "truncated or corrupt" in line and "not found" not in line.lower()


def test_bench_names_the_artifact_folder_and_reference_needs_data(openvino_run, tmp_path):
    _, _, out, _ = openvino_run
    r = cli("bench", out / "openvino-fp32" / "model.xml")
    assert r.returncode == 2 and "pass the artifact folder" in one_error_line(r)
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"predictions": {"a.png": "a"}}))
    r = cli("bench", out / "openvino-fp32", "--reference", ref)
    assert r.returncode == 2 and "add --data" in one_error_line(r)


def test_an_interrupt_inside_a_finalizer_prints_no_traceback_and_is_remembered():
    """TensorFlow's AtomicFunction.__del__ is where Ctrl-C lands now and then: Python prints
    'Exception ignored in ...' with a traceback and carries on. The CLI's hook stays quiet and
    remembers the interrupt, so the run still ends with 130."""
    code = textwrap.dedent("""
        import os, signal, time
        from xception_edge import interrupts
        interrupts.install()
        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
        f = Finalized()
        del f
        print("carried on; interrupted:", interrupts.interrupted(), interrupts.exit_code())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "carried on; interrupted: True 130"
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
