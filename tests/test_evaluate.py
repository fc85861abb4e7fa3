"""`xception-edge evaluate`: Keras fp32 and real artifacts of every backend on the same labelled
images; the report files; --resume; bad input; undecodable images in the denominator."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xception_edge.cli import cli

FP32 = ("litert-fp32", "openvino-fp32", "onnxruntime-fp32")
TARGETS = FP32 + ("arm64-litert-int8",)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(r) -> str:
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


@pytest.fixture(scope="module")
def converted(converted_all, tmp_path_factory):
    """TARGETS from the suite's one conversion of every built-in target, copied into a folder of their own."""
    shared, _, (model, _, val) = converted_all
    out = tmp_path_factory.mktemp("evaluate") / "artifacts"
    for t in TARGETS:
        shutil.copytree(shared / t, out / t)
    return model, out, val


def evaluate(model, artifacts, data, report, *extra):
    return run(
        "evaluate",
        "--model",
        model,
        "--artifacts",
        artifacts,
        "--data",
        data,
        "--report",
        report,
        "--runs",
        5,
        "--warmup",
        1,
        *extra,
    )


@pytest.fixture(scope="module")
def report(converted, tmp_path_factory):
    model, out, val = converted
    folder = tmp_path_factory.mktemp("report") / "report"
    r = evaluate(model, out, val, folder)
    assert r.exit_code == 0, r.output
    assert "report.html" in r.output
    return folder, json.loads((folder / "report.json").read_text()), r.output


def test_report_numbers(report):
    folder, rep, output = report
    assert rep["schema"] == "xception-edge/report" and rep["schema_version"] == 1
    assert rep["data"]["images"] == 30 and rep["data"]["undecodable"] == [] and len(rep["data"]["sha256"]) == 64
    assert rep["host"]["cpu_count"] >= 1 and rep["labels"] == ["a", "b", "c"]
    keras = rep["reference"]
    assert keras["name"] == "keras-fp32" and keras["top1"] >= 0.9 and keras["top5"] == 1.0
    assert keras["latency"]["runs"] == 5 and len(keras["latency"]["samples_ms"]) == 5
    rows = {r["name"]: r for r in rep["artifacts"]}
    assert set(rows) == set(TARGETS)
    for r in rows.values():
        assert r["drop_pp"] == 100 * (r["top1"] - keras["top1"])  # exactly
        assert r["ratio"] == r["top1"] / keras["top1"] and r["meets_mlperf_99"] == (r["ratio"] >= 0.99)
        assert r["flipped"] == round(30 * (1 - r["agreement"]))
        assert sum(len(v) for v in r["flips_per_class"].values()) == r["flipped"]
        for cls, flips in r["flips_per_class"].items():
            assert all(f["image"].startswith(cls + "/") and f["keras"] != f["artifact"] for f in flips)
        assert set(r["per_class"]) == {"a", "b", "c"} and all(v["images"] == 10 for v in r["per_class"].values())
        for cls, v in r["per_class"].items():
            assert v["drop_pp"] == 100 * (v["top1"] - keras["per_class"][cls]["top1"])
        lat = r["latency"]
        assert lat["runs"] == 5 and 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["max_ms"]
        assert r["size_bytes"] > 1000 and len(r["manifest_sha256"]) == 64 and r["same_source_model"] is True
        assert r["reused"] is False
    for name in FP32:
        assert rows[name]["agreement"] == 1.0 and rows[name]["top1"] == keras["top1"] and rows[name]["flipped"] == 0
    assert rows["arm64-litert-int8"]["agreement"] >= 0.9
    assert (
        rows["arm64-litert-int8"]["size_bytes"] < 0.6 * rows["litert-fp32"]["size_bytes"]
    )  # int8 weights; graph overhead on a tiny model
    assert rows["arm64-litert-int8"]["cpu_warning"] and "arm64" in rows["arm64-litert-int8"]["cpu_warning"]
    assert rows["litert-fp32"]["cpu_warning"] is None
    t = rep["timing"]
    assert t["decode_cpu_seconds"] > 0 and t["first_pass_wall_seconds"] > 0
    assert "keras-fp32" in output and "arm64-litert-int8" in output  # the terminal table


def test_report_files(report):
    folder, rep, _ = report
    md = (folder / "report.md").read_text()
    assert "| model | backend | precision |" in md and "| arm64-litert-int8 | litert | int8 |" in md
    html = (folder / "report.html").read_text()
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), "external URL in report.html"
    assert "<link" not in html and "<script" not in html
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == 3 and all(len(i) > 5000 for i in images)  # trade-off, latency, per-class
    import base64

    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert rep["files"]["html"] == str(folder / "report.html")


def test_resume_skips_finished_artifacts(converted, tmp_path, monkeypatch):
    import xception_edge.runtime as runtime

    model, out, val = converted
    folder = tmp_path / "report"
    real = runtime.open_artifact
    opened = []

    def interrupt_on_third(path, **kw):
        opened.append(Path(path).name)
        if len(opened) == 3:
            raise KeyboardInterrupt
        return real(path, **kw)

    monkeypatch.setattr(runtime, "open_artifact", interrupt_on_third)
    r = evaluate(model, out, val, folder)
    assert r.exit_code == 130 and "--resume" in r.output
    done = sorted(p.name.rsplit("-", 1)[0] for p in (folder / "results").glob("*.json"))
    assert done == sorted(["keras-fp32", *opened[:2]]) and not (folder / "report.json").exists()

    def counting(path, **kw):
        opened.append(Path(path).name)
        return real(path, **kw)

    opened.clear()
    monkeypatch.setattr(runtime, "open_artifact", counting)
    r = evaluate(model, out, val, folder, "--resume")
    assert r.exit_code == 0, r.output
    assert "reusing 3 finished result(s)" in r.output
    rep = json.loads((folder / "report.json").read_text())
    reused = {a["name"] for a in rep["artifacts"] if a["reused"]}
    assert reused == set(done) - {"keras-fp32"} and rep["reference"]["reused"] is True
    assert sorted(opened) == sorted(set(TARGETS) - reused)  # only the unfinished ones ran

    opened.clear()
    r = evaluate(model, out, val, folder, "--resume")
    assert r.exit_code == 0 and opened == [] and f"reusing {len(TARGETS) + 1} finished" in r.output
    again = json.loads((folder / "report.json").read_text())
    assert [a["top1"] for a in again["artifacts"]] == [a["top1"] for a in rep["artifacts"]]

    opened.clear()
    r = evaluate(model, out, val, folder, "--resume", "--runs", 6)  # other settings: nothing matches
    assert r.exit_code == 0 and len(opened) == len(TARGETS) and "reusing" not in r.output
    assert len(list((folder / "results").glob("*.json"))) == len(TARGETS) + 1  # stale results pruned


def test_undecodable_images_count_as_misses_and_list_files(converted, tmp_path):
    model, out, val = converted
    data = tmp_path / "data"
    shutil.copytree(val, data)
    (data / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    r = evaluate(model, out, data, tmp_path / "r1", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["data"]["images"] == 31 and rep["data"]["decoded"] == 30
    assert [u["image"] for u in rep["data"]["undecodable"]] == ["a/broken.jpg"]
    for row in [rep["reference"], *rep["artifacts"]]:
        assert row["images"] == 31 and row["top1"] <= 30 / 31 and row["per_class"]["a"]["images"] == 11
    assert "a/broken.jpg" in (tmp_path / "r1" / "report.md").read_text()

    # the same images as a list file: labels by name and by index give the same numbers
    lines = [
        f"{p.relative_to(data).as_posix()}  {p.parent.name if i % 2 else 'abc'.index(p.parent.name)}"
        for i, p in enumerate(sorted(data.rglob("*.*")))
    ]
    (data / "list.txt").write_text("# path label\n" + "\n".join(lines) + "\n")
    r = evaluate(model, out, data / "list.txt", tmp_path / "r2", "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert listed["data"]["form"] == "list" and listed["data"]["images"] == 31
    assert [a["top1"] for a in listed["artifacts"]] == [a["top1"] for a in rep["artifacts"]]
    assert listed["reference"]["top1"] == rep["reference"]["top1"]


def test_bad_input(converted, tmp_path, report):
    model, out, val = converted
    folder, _, _ = report
    before = (folder / "report.json").read_bytes()

    assert "--runs 0" in error_line(evaluate(model, out, val, folder, "--runs", 0))

    arts = tmp_path / "arts"
    shutil.copytree(out, arts)
    (arts / "notes").mkdir()
    assert "notes has no manifest.json" in error_line(evaluate(model, arts, val, folder))
    (arts / "notes").rmdir()

    tflite = arts / "litert-fp32" / "model.tflite"
    blob = bytearray(tflite.read_bytes())
    blob[-10] ^= 0xFF
    tflite.write_bytes(bytes(blob))
    assert "does not match its sha256" in error_line(evaluate(model, arts, val, folder))
    shutil.rmtree(arts / "litert-fp32")

    manifest = arts / "openvino-fp32" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "labels": ["a", "c", "b"]}))
    line = error_line(evaluate(model, arts, val, folder))
    assert "disagree on labels" in line and "openvino-fp32" in line
    manifest.write_text(json.dumps({**m, "preprocessing": {**m["preprocessing"], "interpolation": "bicubic"}}))
    assert "different preprocessing" in error_line(evaluate(model, arts, val, folder))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no images" in error_line(evaluate(model, out, empty, folder))

    wrong = tmp_path / "wrong"
    for cls in ("a", "zebra"):
        (wrong / cls).mkdir(parents=True)
        shutil.copy(val / "a" / "a_000.png", wrong / cls / "x.png")
    line = error_line(evaluate(model, out, wrong, folder))
    assert "zebra" in line and "a, b, c" in line

    lst = tmp_path / "list.txt"
    shutil.copy(val / "a" / "a_000.png", tmp_path / "x.png")
    lst.write_text("x.png lion\n")
    line = error_line(evaluate(model, out, lst, folder))
    assert "lion" in line and "a, b, c" in line
    lst.write_text("x.png\n")
    assert "without a label" in error_line(evaluate(model, out, lst, folder))

    assert "no artifact folders" in error_line(evaluate(model, empty, val, folder))
    assert (folder / "report.json").read_bytes() == before  # nothing lost


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_image_feed_matches_load_images(small_model, tmp_path, threads):
    from xception_edge.imagefeed import ImageFeed
    from xception_edge.preprocess import PreprocessSpec, list_images, load_images

    _, _, val = small_model
    files = list_images(val)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    files.insert(7, bad)
    spec = PreprocessSpec(71, 71)
    expected, failed = load_images(files, spec)
    with ImageFeed(files, spec, workers=threads) as feed:
        got = [(idx, x.copy()) for idx, x in feed.batches(4)]
    idx = [int(i) for i, _ in got for i in i]
    assert idx == [i for i in range(len(files)) if i != 7] and list(feed.failed) == [7] and "bad.png" in feed.failed[7]
    assert (np.concatenate([x for _, x in got]) == expected).all() and len(failed) == 1
    assert feed.decode_cpu_seconds > 0


def test_report_folder_inside_the_artifacts_folder(converted, tmp_path):
    model, out, val = converted
    arts = tmp_path / "arts"
    shutil.copytree(out / "litert-fp32", arts / "litert-fp32")
    r = evaluate(model, arts, val, arts / "report", "--json")
    assert r.exit_code == 0, r.output
    assert [a["name"] for a in json.loads(r.stdout)["artifacts"]] == ["litert-fp32"]
    r = evaluate(model, arts / "litert-fp32", val, tmp_path / "one")  # one artifact folder works too
    assert r.exit_code == 0, r.output
