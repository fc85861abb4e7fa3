import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from xception_edge.artifact import read_manifest, staged_dir, write_manifest
from xception_edge.errors import BadInput


def test_staged_dir_renames_into_place_and_refuses_overwrite(tmp_path):
    final = tmp_path / "t"
    with staged_dir(final, force=False) as stage:
        (stage / "model.bin").write_bytes(b"abc")
        write_manifest(stage, {"target": "t"})
    assert (final / "model.bin").read_bytes() == b"abc"
    with pytest.raises(BadInput, match="--force"):
        with staged_dir(final, force=False):
            pass
    with staged_dir(final, force=True) as stage:
        (stage / "model.bin").write_bytes(b"new")
        write_manifest(stage, {"target": "t"})
    assert (final / "model.bin").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_failure_inside_leaves_nothing_and_keeps_the_old_artifact(tmp_path):
    final = tmp_path / "t"
    with pytest.raises(RuntimeError):
        with staged_dir(final, force=False) as stage:
            (stage / "half").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    final.mkdir()
    (final / "keep").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(final, force=True) as stage:
            raise KeyboardInterrupt
    assert (final / "keep").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t"]


def test_killed_process_leaves_no_artifact_folder(tmp_path):
    code = textwrap.dedent(f"""
        import os, time
        from xception_edge.artifact import staged_dir
        with staged_dir(__import__('pathlib').Path({str(tmp_path / 'out')!r}), force=False) as s:
            (s / 'model.tflite').write_bytes(b'x' * 100)
            print('ready', flush=True)
            time.sleep(30)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    p.wait(timeout=20)
    assert not (tmp_path / "out").exists()
    assert [x.name for x in tmp_path.iterdir() if not x.name.startswith(".xe-tmp-")] == []
    assert list(tmp_path.iterdir()) == []


def test_manifest_checks_sha256_and_missing_files(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"weights")
    m = write_manifest(d, {"target": "a"})
    assert m["files"]["model.onnx"]["bytes"] == 7
    assert read_manifest(d)["target"] == "a"
    (d / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(BadInput, match="does not match its sha256"):
        read_manifest(d)
    os.remove(d / "model.onnx")
    with pytest.raises(BadInput, match="is missing"):
        read_manifest(d)
    with pytest.raises(BadInput, match="no manifest.json"):
        read_manifest(tmp_path)
    (d / "manifest.json").write_text(json.dumps({"schema": "xception-edge/manifest", "schema_version": 99}))
    with pytest.raises(BadInput, match="schema version 99"):
        read_manifest(d)
