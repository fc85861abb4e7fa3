"""`xception-edge gate`: exit 0 when every gate passes, 1 when one fails (naming target and
gate), 2 for bad input; never passes vacuously."""

import json
import math

import pytest
from click.testing import CliRunner
from PIL import Image

from xception_edge.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def row(target, *, top1=0.95, drop_pp=-0.5, ratio=0.995, agreement=0.99, size=2_000_000, p50=10.0, images=100):
    return {"target": target, "path": "/nonexistent", "images": images, "top1": top1, "drop_pp": drop_pp, "ratio": ratio,
            "agreement": agreement, "size_bytes": size, "latency": {"p50_ms": p50}}


def write_report(tmp_path, rows, **extra):
    report = {"schema": "xception-edge/report", "schema_version": 1, "host": {"cpu": "AMD EPYC"}, "artifacts": rows, **extra}
    p = tmp_path / "report.json"
    p.write_text(json.dumps(report))
    return p


def test_builtin_profile_gates_pass_and_fail(tmp_path):
    # arm64-litert-int8's profile: drop ≤ 1.0 pp, ratio ≥ 0.99, agreement ≥ 0.97
    ok = write_report(tmp_path, [row("arm64-litert-int8")])
    r = run("gate", ok, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["passed"] and {x["gate"] for x in res["results"]} == {"max_top1_drop_pp", "min_top1_ratio", "min_agreement"}
    bad = write_report(tmp_path, [row("arm64-litert-int8", drop_pp=-3.0, ratio=0.96, agreement=0.9)])
    junit = tmp_path / "gates.xml"
    r = run("gate", bad, "--junit", junit)
    assert r.exit_code == 1
    assert "gate failed: arm64-litert-int8: max_top1_drop_pp = 3 (limit 1)" in r.output
    xml = junit.read_text()
    assert 'tests="3" failures="3"' in xml and 'classname="arm64-litert-int8"' in xml and "<failure" in xml


@pytest.mark.parametrize("broken,needle", [
    ({"agreement": float("nan")}, "NaN"),
    ({"images": 0}, "no images"),
    ({"ratio": None}, "missing"),
])
def test_never_passes_vacuously(tmp_path, broken, needle):
    p = write_report(tmp_path, [row("x86-openvino-int8", **broken)])
    r = run("gate", p)
    assert r.exit_code == 1 and needle in r.output
    empty = write_report(tmp_path, [])
    r = run("gate", empty)
    assert r.exit_code == 1 and "no gated artifacts" in r.output


def test_gates_file_overrides_and_missing_target(tmp_path):
    p = write_report(tmp_path, [row("x86-openvino-int8", drop_pp=-1.5, ratio=0.985)])
    assert run("gate", p).exit_code == 1
    g = tmp_path / "gates.toml"
    g.write_text("[x86-openvino-int8]\nmax_top1_drop_pp = 2.0\nmin_top1_ratio = 0.98\n")
    assert run("gate", p, "--gates", g).exit_code == 0
    g.write_text("[x86-openvino-int8]\nmax_top1_drop_pp = 2.0\nmin_top1_ratio = 0.98\n[arm64-litert-int8]\nmin_agreement = 0.9\n")
    r = run("gate", p, "--gates", g)
    assert r.exit_code == 1 and "arm64-litert-int8" in r.output and "missing from the report" in r.output


def test_latency_gate_applies_only_on_its_host(tmp_path):
    g = tmp_path / "gates.toml"
    p = write_report(tmp_path, [row("x86-openvino-int8", p50=80.0)])
    g.write_text('[x86-openvino-int8]\nmax_p50_latency_ms = 50\nlatency_host = "Raspberry Pi"\n')
    assert run("gate", p, "--gates", g).exit_code == 0  # skipped: the report was made elsewhere
    g.write_text('[x86-openvino-int8]\nmax_p50_latency_ms = 50\nlatency_host = "EPYC"\n')
    r = run("gate", p, "--gates", g)
    assert r.exit_code == 1 and "max_p50_latency_ms" in r.output


@pytest.mark.parametrize("body,needle", [
    ("[x86-openvino-int8]\nmax_drop = 1\n", "unknown key 'max_drop'"),
    ("[x86-openvino-int8]\nmin_agreement = -0.5\n", "non-negative"),
    ("not toml [", "not valid TOML"),
])
def test_bad_gates_files(tmp_path, body, needle):
    p = write_report(tmp_path, [row("x86-openvino-int8")])
    g = tmp_path / "gates.toml"
    g.write_text(body)
    r = run("gate", p, "--gates", g)
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output


def test_old_or_foreign_report_is_bad_input(tmp_path):
    p = write_report(tmp_path, [row("x86-openvino-int8")], schema_version=0)
    r = run("gate", p)
    assert r.exit_code == 2 and "schema version 0" in r.output
    (tmp_path / "other.json").write_text('{"hello": 1}')
    assert run("gate", tmp_path / "other.json").exit_code == 2
    assert run("gate", tmp_path / "missing.json").exit_code == 2


def test_convert_evaluate_gate_catches_a_broken_conversion(small_model, tmp_path):
    """Real pipeline: a good int8 passes its gates; one calibrated on blank images (with
    --no-verify, so it gets written) fails them, with the target named."""
    model, train, val = small_model
    good = tmp_path / "good"
    assert run("convert", "--model", model, "--target", "arm64-litert-int8", "--calibration", train,
               "--num-calibration", 40, "--verify-data", val, "--out", good).exit_code == 0
    assert run("evaluate", "--model", model, "--artifacts", good, "--data", val, "--report", tmp_path / "rg", "--runs", 3).exit_code == 0
    r = run("gate", tmp_path / "rg" / "report.json")
    assert r.exit_code == 0, r.output

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(10):
        Image.new("RGB", (71, 71), (0, 0, 0)).save(blank / f"b{i}.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    bad = tmp_path / "bad"
    r = run("convert", "--model", model, "--target", "arm64-litert-int8", "--calibration", blank, "--labels", labels,
            "--no-verify", "--out", bad)
    assert r.exit_code == 0, r.output
    assert run("evaluate", "--model", model, "--artifacts", bad, "--data", val, "--report", tmp_path / "rb", "--runs", 3).exit_code == 0
    r = run("gate", tmp_path / "rb" / "report.json")
    assert r.exit_code == 1 and "gate failed: arm64-litert-int8" in r.output
