"""`xception-edge sweep` (issue #14, part 3): real conversions of the small model over a grid of
calibration size x seed, locally and as Ray tasks on the two-node test cluster; each cell's numbers
against `evaluate`'s on the same artifact; the recommendation against the data; --resume; and the
bad-input one-liners (checked before any model loads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from xception_edge.cli import cli

TARGET = "x86-onnxruntime-int8"  # the quickest int8 conversion of the small model (~1 s a cell)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def sweep_args(small_model, out):
    model, train, val = small_model
    return ["sweep", "--model", model, "--target", TARGET, "--calibration", train, "--validation", val, "--out", out]


@pytest.fixture(scope="module")
def swept(small_model, tmp_path_factory):
    """2 sizes x 2 seeds on the small model, through the command line (--json)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    r = invoke(*sweep_args(small_model, out), "--grid", "size=8,16", "--grid", "seed=0,1", "--json")
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def calibration_list(out: Path, cell: dict) -> list[str]:
    text = (out / cell["artifact"] / "calibration.txt").read_text()
    return [line.split(None, 1)[1] for line in text.splitlines() if line and not line.startswith("#")]


def test_four_cells_each_its_own_artifact_and_calibration_sample(swept):
    from xception_edge.artifact import read_manifest
    from xception_edge.hashing import sha256_file

    out, sweep = swept
    cells = sweep["cells"]
    assert [(c["size"], c["seed"]) for c in cells] == [(8, 0), (8, 1), (16, 0), (16, 1)]
    assert all(c["ok"] and c["method"] == "percentile" and c["transforms"] == ["cle"] for c in cells)  # the profile's own
    assert len({c["artifact"] for c in cells}) == 4 and len({c["model_sha256"] for c in cells}) == 4
    lists = {}
    for c in cells:
        m = read_manifest(out / c["artifact"])  # every file against its sha256
        assert m.target == TARGET and m.calibration["count"] == c["size"] and m.calibration["seed"] == c["seed"]
        assert m.profile["calibration_size"] == c["size"] and m.verification_skipped == "--no-verify"
        assert sha256_file(out / c["artifact"] / m.model_file) == c["model_sha256"]
        lists[c["size"], c["seed"]] = calibration_list(out, c)
        assert len(lists[c["size"], c["seed"]]) == c["size"]
    assert set(lists[8, 0]) != set(lists[8, 1]) and set(lists[16, 0]) != set(lists[16, 1])  # seeds sample differently
    assert lists[16, 0][:8] == lists[8, 0] and lists[16, 1][:8] == lists[8, 1]  # a seed's larger sample extends its smaller one
    assert (out / "cells" / cells[0]["name"] / "profile.toml").is_file()


def test_each_cell_scores_as_evaluate_scores_its_artifact(swept, small_model, tmp_path):
    import xception_edge as xe

    out, sweep = swept
    cell = sweep["cells"][3]
    report = xe.evaluate(small_model[0], out / cell["artifact"], small_model[2], report=tmp_path / "r", runs=1, warmup=0)
    row = report.artifacts[0]
    assert report.reference.top1 == sweep["reference"]["top1"] and row.images == cell["images"] == 30
    assert (row.top1, row.agreement, row.drop_pp, row.flipped) == (
        cell["top1"],
        cell["agreement"],
        cell["drop_pp"],
        cell["flipped"],
    )
    assert list(row.drop_ci_pp) == cell["drop_ci_pp"] and row.mcnemar_p == cell["mcnemar_p"]


def test_summary_and_recommendation_follow_from_the_cells(swept):
    out, sweep = swept
    rec = sweep["recommendation"]
    for s in sweep["summary"]:
        top1 = [100 * c["top1"] for c in sweep["cells"] if c["size"] == s["size"]]
        assert s["seeds"] == s["converted"] == 2
        assert s["top1"]["min"] == min(top1) and s["top1"]["max"] == max(top1)
        assert s["spread_pp"] == pytest.approx(max(top1) - min(top1))
        low, high = s["spread_ci_pp"]
        assert low <= s["spread_pp"] <= high and s["within_noise"] == (low <= 0)
        assert s["stable"] == (s["within_noise"] and s["not_worse"])
    stable = {s["size"]: s["stable"] for s in sweep["summary"]}
    expected = next((size for size in sorted(stable) if all(stable[b] for b in stable if b >= size)), None)
    assert rec["size"] == expected and rec["groups"] == [{"method": "percentile", "transforms": ["cle"], "size": expected}]
    assert "paired-bootstrap" in rec["noise"] and "30 validation images" in rec["noise"] and rec["reason"]


def test_markdown_and_html_are_written(swept):
    out, sweep = swept
    assert json.loads((out / "sweep.json").read_text())["cells"] == sweep["cells"]
    md = (out / "sweep.md").read_text()
    assert "| method | transforms | size |" in md and all(c["name"] in md for c in sweep["cells"])
    assert ("Recommended calibration size" if sweep["recommendation"]["size"] else "No recommendation") in md
    html = (out / "sweep.html").read_text()
    assert "data:image/png;base64," in html and sweep["cells"][0]["model_sha256"][:12] in html
    assert not list(out.rglob(".xe-tmp-*")) and not (out / ".xe-lock").exists()


def test_resume_reuses_finished_cells_and_redoes_a_tampered_one(swept, small_model, tmp_path):
    import xception_edge as xe

    out = tmp_path / "out"
    shutil.copytree(swept[0], out)
    cells = swept[1]["cells"]
    tampered = out / "cells" / cells[1]["name"] / "cell.json"
    tampered.write_text(tampered.read_text().replace('"top1": ', '"top1": "x", "was": '))
    model, train, val = small_model
    grid = {"size": [8, 16], "seed": [0, 1, 2]}
    sweep = xe.sweep(model, TARGET, calibration=train, validation=val, grid=grid, out=out, resume=True)
    reused = {c["name"]: c["reused"] for c in sweep["cells"]}
    assert len(reused) == 6 and sum(reused.values()) == 3 and not reused[cells[1]["name"]]
    again = {c["name"]: c for c in sweep["cells"]}
    for c in cells:
        assert again[c["name"]]["top1"] == c["top1"] and again[c["name"]]["model_sha256"] == c["model_sha256"]


def test_the_method_axis_reaches_the_converter(small_model, tmp_path):
    """ONNX Runtime's calibration_method per cell (percentile clips the ranges: another model); its
    calibrator's own prints stay off stdout, which --json keeps for the result."""
    from xception_edge.artifact import read_manifest
    from xception_edge.targets import load_profile

    out = tmp_path / "out"
    grid = ["--grid", "size=8", "--grid", "method=minmax,percentile", "--grid", "transforms=none"]
    r = invoke(*sweep_args(small_model, out), *grid, "--json")
    assert r.exit_code == 0, r.output
    cells = json.loads(r.stdout)["cells"]
    assert [c["name"] for c in cells] == ["size8-seed0-minmax-none", "size8-seed0-percentile-none"]
    for c in cells:
        m = read_manifest(out / c["artifact"])
        assert m.conversion["quantization"]["calibration_method"] == c["method"] and m.transforms is None
        assert load_profile(out / c["profile"]).quantization.calibration_method == c["method"]
    assert cells[0]["model_sha256"] != cells[1]["model_sha256"]
    assert cells[0]["calibration_sha256"] == cells[1]["calibration_sha256"]  # the same images, another method


def test_ctrl_c_exits_130_and_leaves_only_finished_cells(small_model, tmp_path):
    """SIGINT once the first cell is recorded: exit 130, no sweep.*, no temporary file or lock, and
    every cell folder left holds a whole artifact (the cell that was running leaves nothing)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    args = [*sweep_args(small_model, out), "--grid", "size=8,16,32", "--grid", "seed=0,1,2"]
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "xception_edge", *map(str, args)],  # a crash shows where
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.glob("cells/*/cell.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into the next cell
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(out.glob("sweep.*")) and not list(out.rglob(".xe-*"))
    from xception_edge.artifact import read_manifest

    folders = list((out / "cells").iterdir())
    assert (folders[0].parent / "size8-seed0-percentile-cle" / "cell.json").is_file()
    for f in folders:  # a finished cell: its artifact whole (its record too, unless the signal fell between them)
        assert read_manifest(f / TARGET).calibration["count"] in (8, 16, 32)


def test_sweep_on_ray_equals_the_local_cells(swept, small_model, ray_cluster, tmp_path):
    import xception_edge as xe

    model, train, val = small_model
    sweep = xe.sweep(
        model, TARGET, calibration=train, validation=val, grid={"size": [8], "seed": [0, 1]}, out=tmp_path / "ray",
        executor="ray", ray_address=ray_cluster.address,
    )  # fmt: skip
    local = {c["name"]: c for c in swept[1]["cells"]}
    assert [c["name"] for c in sweep["cells"]] == ["size8-seed0-percentile-cle", "size8-seed1-percentile-cle"]
    for c in sweep["cells"]:
        assert c["ok"] and (tmp_path / "ray" / c["artifact"] / "manifest.json").is_file()
        mine = local[c["name"]]
        assert (c["top1"], c["agreement"], c["calibration_sha256"]) == (
            mine["top1"],
            mine["agreement"],
            mine["calibration_sha256"],
        )
    assert sweep["executor"] == {"kind": "ray", "ray_address": ray_cluster.address}
    assert sweep["reference"] == swept[1]["reference"]


# ------------------------------------------------------------------ the rule, on made-up cells
def _cell(size, seed, right, *, ok=True):
    """A cell record whose predictions are right on the first ``right`` of 200 images."""
    label_of = {f"i{k}": "a" for k in range(200)}
    preds = {k: ("a" if i < right else "b") for i, k in enumerate(label_of)}
    top1 = right / 200
    return {
        "size": size,
        "seed": seed,
        "method": "minmax",
        "transforms": [],
        "ok": ok,
        "top1": top1,
        "agreement": top1,
        "predictions": preds,
    }


def test_the_rule_on_made_up_cells():
    from xception_edge.sweeps.noise import recommend, summarize

    label_of = {f"i{k}": "a" for k in range(200)}
    cells = [_cell(8, 0, 150), _cell(8, 1, 190), _cell(32, 0, 186), _cell(32, 1, 189), _cell(128, 0, 188), _cell(128, 1, 189)]
    summary = summarize(cells, label_of)
    by = {s["size"]: s for s in summary}
    assert not by[8]["within_noise"] and by[8]["spread_pp"] == pytest.approx(20.0)  # 40 images apart: not noise
    assert by[32]["within_noise"] and by[32]["not_worse"] and by[128]["stable"]
    assert recommend(summary, 200, 2)["size"] == 32
    worse = [_cell(8, 0, 160), _cell(8, 1, 161), _cell(128, 0, 190), _cell(128, 1, 191)]  # stable, but below the largest
    assert not summarize(worse, label_of)[0]["not_worse"] and recommend(summarize(worse, label_of), 200, 2)["size"] == 128
    failed = [_cell(8, 0, 190), _cell(8, 1, 0, ok=False), _cell(16, 0, 190), _cell(16, 1, 190, ok=False)]
    rec = recommend(summarize(failed, label_of), 200, 2)
    assert rec["size"] is None and "not stable" in rec["reason"]
    one_seed = recommend(summarize([_cell(8, 0, 190), _cell(16, 0, 190)], label_of), 200, 1)
    assert one_seed["size"] is None and "add seeds" in one_seed["reason"]


# ------------------------------------------------------------------ bad input: one line, exit 2, nothing written
def error_line(r) -> str:
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


@pytest.mark.parametrize(
    "grid,needle",
    [
        ("sizes = [8]\n", "unknown key 'sizes' (did you mean 'size'?); the axes are size, seed, method, transforms"),
        ("size = [8]\nseed = []\n", "axis 'seed' is empty"),
        ('method = ["histogram"]\n', "method 'histogram' is not a calibration method of target x86-onnxruntime-int8 "),
        ("size = [0]\n", "size 0 is not a whole calibration image count"),
        ("size = [8, 8]\n", "size 8 is listed twice"),
        ("size = [500]\n", "grid size 500 is more than the 120 images of --calibration"),
        ('transforms = [["clever"]]\n', "unknown transform 'clever'"),
        ("size = 8\n", "size must be a list of values"),
        ("size = [\n", "is not valid TOML"),
    ],
)
def test_bad_grid_file(small_model, tmp_path, grid, needle):
    path = tmp_path / "grid.toml"
    path.write_text(grid)
    r = invoke(*sweep_args(small_model, tmp_path / "out"), "--grid", path)
    assert needle in error_line(r) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "target,grid,needle",
    [
        (TARGET, ["seed="], "--grid: axis 'seed' is empty"),
        (TARGET, ["size=8", "bogus=1"], "--grid: unknown key 'bogus'"),
        (TARGET, ["seed=a"], "seed 'a' is not a whole number"),
        ("x86-openvino-int8", ["method=entropy"], "minmax, mean_minmax, histogram ([quantization] activations_range)"),
        (
            "arm64-litert-int8",
            ["method=kl"],
            "not a calibration method of target arm64-litert-int8 (litert backend): minmax, entropy, percentile",
        ),
        ("litert-fp32", ["size=8"], "sweep varies the calibration of an int8 target; litert-fp32 is fp32"),
        (TARGET, ["size=8", "grid.toml"], "give either one grid file or KEY=V1,V2 options"),
    ],
)
def test_bad_inline_grid_and_target(small_model, tmp_path, target, grid, needle):
    model, train, val = small_model
    args = ["sweep", "--model", model, "--target", target, "--calibration", train, "--validation", val]
    r = invoke(*args, "--out", tmp_path / "out", *[x for g in grid for x in ("--grid", g)])
    assert needle in error_line(r) and not (tmp_path / "out").exists()


def test_json_grid_and_other_bad_options(small_model, tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"size": [8], "method": ["minmax", "percentile"], "transforms": [[], ["cle", "cle"]]}))
    r = invoke(*sweep_args(small_model, tmp_path / "out"), "--grid", path)
    assert "a transform is listed twice" in error_line(r)
    r = invoke(*sweep_args(small_model, tmp_path / "out"), "--grid", "size=8", "--ray-address", "127.0.0.1:1")
    assert "--ray-address 127.0.0.1:1 is for --executor ray" in error_line(r)
    from raycluster import free_port

    address = f"127.0.0.1:{free_port()}"
    r = invoke(*sweep_args(small_model, tmp_path / "out"), "--grid", "size=8", "--executor", "ray", "--ray-address", address)
    assert f"--ray-address {address}: no Ray head node reachable there" in error_line(r)
    model, train, val = small_model
    r = invoke("sweep", "--model", model, "--target", TARGET, "--calibration", train, "--validation", tmp_path / "nope",
               "--grid", "size=8", "--out", tmp_path / "out")  # fmt: skip
    assert "--validation" in error_line(r) and not (tmp_path / "out").exists()


def test_every_backend_names_valid_calibration_methods(tmp_path):
    """The registry's method axis: each backend's key is a [quantization] field, and each of its
    values makes a profile the loader accepts."""
    import dataclasses

    from xception_edge import backends
    from xception_edge.profiles import QuantSpec
    from xception_edge.sweeps.grid import Cell
    from xception_edge.sweeps.profile import cell_profile, write_cell_profile
    from xception_edge.targets import builtin_names, load_profile, resolve_target

    fields = {f.name for f in dataclasses.fields(QuantSpec)}
    for name in builtin_names():
        profile = resolve_target(name)
        spec = backends.get(profile.backend)
        assert spec.calibration_methods and (spec.calibration_setting in fields or not spec.calibration_setting)
        for method in spec.calibration_methods:
            cell = Cell(8, 0, method, ("cle",))
            want = cell_profile(profile, spec.calibration_setting, cell)
            folder = tmp_path / f"{name}-{method}"
            folder.mkdir()
            assert dataclasses.replace(load_profile(write_cell_profile(folder, want, cell)), source="") == want
            # the percentile level goes with that method only (the loader refuses it beside another)
            level = profile.quantization.calibration_percentile if method == "percentile" else QuantSpec().calibration_percentile
            assert want.quantization.calibration_percentile == level
    assert resolve_target("x86-onnxruntime-int8").quantization.calibration_percentile == 99.99
