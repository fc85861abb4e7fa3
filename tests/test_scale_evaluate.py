"""`evaluate --executor ray` on the session's real two-node Ray cluster (tests/raycluster.py): the
report's accuracy equals a local run's image for image; a worker node whose raylet is killed
mid-run; `--resume` after the driver is interrupted recomputes only the missing shards; data a
node cannot see (without and with --ship-data); one-line errors for bad input.

The small model's artifacts come from the suite's one conversion (conftest.converted_all): one
int8 artifact of each backend and LiteRT fp32. The images: 3 classes x 40 plus one file that is
not an image, in shards of 32 (4 shards; the undecodable one is in the last)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_images
from xception_edge.cli import cli

pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[ray]'")

TARGETS = ("arm64-litert-int8", "x86-onnxruntime-int8", "x86-openvino-int8", "litert-fp32")
ACCURACY = (
    "images", "top1", "top5", "drop_pp", "top5_drop_pp", "ratio", "meets_mlperf_99", "agreement", "flipped",
    "flips_per_class", "per_class", "drop_ci_pp", "mcnemar_p", "lost", "gained",
)  # fmt: skip


def make_data(root: Path, per_class: int = 40) -> Path:
    write_images(root, per_class=per_class, seed=3)
    (root / "c" / "c_zz_broken.png").write_bytes(b"not an image")  # undecodable: a miss for every model
    return root


@pytest.fixture(scope="module")
def setup(converted_all, tmp_path_factory):
    """(model, artifacts folder, data folder, the local run's report folder)."""
    return local_run(converted_all, tmp_path_factory.mktemp("scale"), TARGETS, per_class=40)


def local_run(converted_all, root: Path, targets, per_class: int):
    """``targets``' artifacts copied from the shared conversion, data made, and a plain local
    evaluate of them: (model, artifacts folder, data folder, the local report folder)."""
    shared, _, (model, _, _) = converted_all
    for t in targets:
        shutil.copytree(shared / t, root / "artifacts" / t)
    data = make_data(root / "val", per_class=per_class)
    r = evaluate(model, root / "artifacts", data, root / "local")
    assert r.exit_code == 0, r.output
    return model, root / "artifacts", data, root / "local"


def args(model, artifacts, data, report, *extra) -> list[str]:
    return [str(a) for a in ("evaluate", "--model", model, "--artifacts", artifacts, "--data", data, "--report", report)] + [
        str(a) for a in ("--runs", 3, "--warmup", 1, *extra)
    ]


def evaluate(*a, **kw):
    return CliRunner().invoke(cli, args(*a, **kw))


def on_ray(cluster, *extra) -> tuple[str, ...]:
    return ("--executor", "ray", "--ray-address", cluster.address, "--shard-size", 32, *extra)


def report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def accuracy(folder: Path, data_root: Path | None = None) -> dict:
    """What must be identical between runs: every row's accuracy fields, the data record and the
    Keras model's per-image top-1 (its cached result)."""
    rep = report(folder)
    data = {k: rep["data"][k] for k in ("images", "decoded", "per_class_images", "sha256")}
    root = str(data_root or rep["data"]["root"])
    data["undecodable"] = [{**u, "error": u["error"].replace(root, "ROOT")} for u in rep["data"]["undecodable"]]
    rows = {r["name"]: {k: r.get(k) for k in ACCURACY} for r in [rep["reference"], *rep["artifacts"]]}
    (keras,) = (folder / "results").glob("keras-fp32-*.json")
    return {"data": data, "rows": rows, "keras_predictions": json.loads(keras.read_text())["predictions"]}


def shard_files(folder: Path) -> list[Path]:
    return sorted((folder / "shards").glob("*.npz"))


def test_equals_local_run_image_for_image(setup, ray_cluster):
    model, artifacts, data, local = setup
    out = data.parent / "on-ray"
    r = evaluate(model, artifacts, data, out, *on_ray(ray_cluster))
    assert r.exit_code == 0, r.output
    assert accuracy(out) == accuracy(local)
    rep = report(out)
    assert rep["data"]["decoded"] == 120 and len(rep["data"]["undecodable"]) == 1
    ray = rep["timing"]["ray"]
    assert (ray["shards"], ray["computed"], ray["reused"], ray["images"]) == (4, 4, 0, 121)
    assert sum(n["images"] for n in ray["nodes"]) == 121 and all(n["images_per_s"] > 0 for n in ray["nodes"])
    assert rep["settings"]["executor"] == "ray" and rep["settings"]["shard_size"] == 32
    assert "computed 4 of 4 shards" in r.output and "images/s" in r.output
    assert "for the device" not in r.output  # without --device the driver decodes no image
    md = (out / "report.md").read_text()
    assert "latency measured on this host" in md and "## Ray throughput" in md
    _top5_equals_local(model, artifacts, data, out)


def _top5_equals_local(model, artifacts, data, out):
    """The shards' per-image top-5 classes and probabilities are those of the local run's own code
    path (the decoding feed and _predict, in the same batches), bit for bit."""
    from xception_edge.evaluation import _predict
    from xception_edge.evaluation_inputs import discover_artifacts, shared_preprocessing
    from xception_edge.evaluation_keras import load_model
    from xception_edge.dataset import labelled_images
    from xception_edge.imagefeed import ImageFeed
    from xception_edge.runtime import open_artifact
    from xception_edge.scale.shardstore import dense
    from xception_edge.scale.worker import KERAS, top_k

    arts = discover_artifacts(artifacts)
    spec, labels = shared_preprocessing(arts)
    predictors = {KERAS: load_model(type("R", (), {"model": str(model), "unsafe_model": False}), spec, labels)[1]}
    predictors |= {a.name: open_artifact(a.folder).predict for a in arts}
    names = list(predictors)
    shards = [np.load(p) for p in shard_files(out)]
    with ImageFeed(labelled_images(data, labels).files, spec, workers=0) as feed:
        for j, name in enumerate(names):
            idx, probs, _ = _predict(predictors[name], feed, len(labels))
            want = top_k(idx, probs, 5)
            got = {part: np.concatenate([z[f"{part}{j}"] for z in shards]) for part in ("idx", "top", "p")}
            for part in ("idx", "top", "p"):
                assert np.array_equal(got[part], want[part]), (name, part)
            assert np.array_equal(dense(got, len(labels))[1].argmax(-1), probs.argmax(-1))


def test_data_a_node_cannot_see_then_ship_data(setup, ray_cluster):
    if ray_cluster.hidden is None:
        pytest.skip("needs root and unshare: the second node's own mount namespace hides a folder from it")
    model, artifacts, data, local = setup
    hidden = ray_cluster.hidden / "val"
    shutil.copytree(data, hidden, dirs_exist_ok=True)
    out = data.parent / "hidden-report"
    r = evaluate(model, artifacts, hidden, out, *on_ray(ray_cluster))
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0].startswith("error: Ray node 127.0.0.3 (node ") and f"--data {hidden}: no such file or folder" in lines[0]
    assert "--ship-data" in lines[0]
    r = evaluate(model, artifacts, hidden, out, *on_ray(ray_cluster, "--ship-data"))
    assert r.exit_code == 0, r.output
    assert accuracy(out, hidden) == accuracy(local, data)
    assert report(out)["timing"]["ray"]["ship_data"] is True


@pytest.mark.slow
def test_worker_node_dies_mid_run(setup, ray_cluster):
    """A third node's raylet is killed while it runs a shard: Ray retries the shard elsewhere and
    the report is complete and identical."""
    model, artifacts, data, local = setup
    node = ray_cluster.add_node("node3")
    out = data.parent / "fault"
    proc = subprocess.Popen(
        [sys.executable, "-m", "xception_edge", *args(model, artifacts, data, out, *on_ray(ray_cluster))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        busy = _wait(lambda: node.running("ray::shard_task") or proc.poll() is not None, 180)
        assert busy and proc.poll() is None, "node3 never ran a shard before the run ended"
        ray_cluster.kill_raylet(node)
        output, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert accuracy(out) == accuracy(local)
    ray = report(out)["timing"]["ray"]
    assert (ray["shards"], ray["computed"]) == (4, 4) and sum(n["images"] for n in ray["nodes"]) == 121


@pytest.mark.slow
def test_resume_after_interrupted_driver_recomputes_only_missing_shards(setup, ray_cluster, tmp_path):
    model, artifacts, _, local = setup
    data = make_data(tmp_path / "val", per_class=80)  # 241 images: 8 shards of 32
    out = tmp_path / "report"
    driver = [sys.executable, "-m", "xception_edge", *args(model, artifacts, data, out, *on_ray(ray_cluster))]
    proc = subprocess.Popen(driver, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait(lambda: shard_files(out) or proc.poll() is not None, 240) and proc.poll() is None
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    live = [n for n in ray_cluster.nodes if n.raylet_pid()]
    assert _wait(lambda: not any(n.running("ray::shard_task") for n in live), 60), "shards still run after Ctrl-C"
    kept = shard_files(out)
    assert 1 <= len(kept) < 8 and not list((out / "shards").glob(".xe-tmp-*"))
    assert "rerun with --resume" in output and not (out / "report.json").exists()
    r = evaluate(model, artifacts, data, out, *on_ray(ray_cluster), "--resume")
    assert r.exit_code == 0, r.output
    ray = report(out)["timing"]["ray"]
    assert (ray["shards"], ray["reused"], ray["computed"]) == (8, len(kept), 8 - len(kept))
    assert f"computed {8 - len(kept)} of 8 shards ({len(kept)} reused" in r.output
    assert len(shard_files(out)) == 8
    fresh = tmp_path / "fresh"
    assert evaluate(model, artifacts, data, fresh, *on_ray(ray_cluster)).exit_code == 0
    assert accuracy(out) == accuracy(fresh)


def _wait(done, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if done():
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------ bad input: one line, exit 2
def one_line_error(r) -> str:
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def test_unreachable_ray_address_fails_fast(tmp_path):
    from raycluster import free_port

    address = f"127.0.0.1:{free_port()}"
    make_data(tmp_path / "val", per_class=1)
    t0 = time.perf_counter()
    r = evaluate("m.keras", tmp_path, tmp_path / "val", tmp_path / "r", "--executor", "ray", "--ray-address", address)
    assert f"--ray-address {address}: no Ray head node reachable there" in one_line_error(r)
    assert time.perf_counter() - t0 < 15


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--ship-data",), "are for --executor ray"),
        (("--executor", "ray", "--shard-size", "0"), "--shard-size 0 must be a positive multiple of 32"),
        (("--executor", "ray", "--shard-size", "50"), "--shard-size 50 must be a positive multiple of 32"),
    ],
)
def test_bad_ray_options(tmp_path, extra, message):
    assert message in one_line_error(evaluate("m.keras", tmp_path, tmp_path, tmp_path / "r", *extra))


def test_ray_not_installed_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to find_spec
    line = one_line_error(evaluate("m.keras", tmp_path, tmp_path, tmp_path / "r", "--executor", "ray"))
    assert line == "error: --executor ray: ray is not installed; install it with: pip install 'xception-edge[ray]'"


def test_ray_is_not_imported_unless_asked():
    code = (
        "import sys, xception_edge, xception_edge.api, xception_edge.cli, xception_edge.cli_harness, "
        "xception_edge.evaluation, xception_edge.scale.evaluate, xception_edge.scale.worker; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_cluster_token_we_do_not_have_is_one_line_and_exit_2(setup, ray_cluster, tmp_path):
    """The test cluster uses Ray's token authentication; a driver without the token (none in the
    environment, none in its ~/.ray) gets one line naming the address and where the token goes."""
    model, artifacts, data, _ = setup
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path)}
    driver = [sys.executable, "-m", "xception_edge", *args(model, artifacts, data, tmp_path / "r", *on_ray(ray_cluster))]
    r = subprocess.run(driver, capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
    assert f"--ray-address {ray_cluster.address}: the Ray cluster asks for its authentication token" in lines[0]
    assert not (tmp_path / "r").exists() and not (tmp_path / ".ray").exists()
