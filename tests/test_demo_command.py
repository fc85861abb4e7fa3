"""`xception-edge demo` end to end on the tiny demo variant: build, convert every target,
compare with Keras on held-out images."""

import json

import pytest

from click.testing import CliRunner

from xception_edge.cli import cli
from xception_edge.demo_run import demo_calibration_list
from xception_edge.targets import builtin_names


@pytest.mark.slow  # the tiny demo (session fixture tiny_demo builds it) and every demo step
def test_demo_command_converts_every_target_and_compares(tiny_demo, tmp_path):
    """From the session's tiny demo cache (built by ensure_demo, as `demo --tiny` would on a miss)."""
    out = tmp_path / "artifacts"
    cache = tiny_demo.root.parent
    r = CliRunner().invoke(cli, ["demo", "--tiny", "--cache", str(cache), "--out", str(out), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "using cached demo model" in r.stderr
    payload = json.loads(r.stdout)
    conv = {c["target"]: c for c in payload["conversions"]}
    assert set(conv) == set(builtin_names()) and all(c["error"] is None for c in conv.values())
    assert set(payload["evaluations"]) == {"val", "val_hard"}
    for split, report in payload["evaluations"].items():
        rows = {r["name"]: r for r in report["artifacts"]}
        assert report["data"]["images"] == 120 and set(rows) == set(builtin_names())
        assert report["reference"]["top1"] > 0.2  # 12 classes: chance is 8%
        for name in builtin_names():
            assert 0.0 <= rows[name]["agreement"] <= 1.0 and rows[name]["size_bytes"] > 0
        assert rows["litert-fp32"]["agreement"] == 1.0
        assert (tmp_path / "artifacts-report" / split / "report.html").is_file()
    assert (out / "arm64-litert-int8" / "manifest.json").is_file()
    inspected = {a["target"]: a for a in payload["inspection"]["artifacts"]}
    assert set(inspected) == {n for n in builtin_names() if n.endswith("-int8") and "dynamic" not in n}
    assert all(a["unmatched_weighted_layers"] == [] and a["blame"] for a in inspected.values())
    assert (tmp_path / "artifacts-report" / "inspect" / "inspect.html").is_file()


def test_demo_calibration_list_is_committed_and_well_formed():
    lines = [l for l in demo_calibration_list().read_text().splitlines() if l and not l.startswith("#")]
    assert len(lines) == 300 and len(set(lines)) == 300
    classes = {l.split("/")[0] for l in lines}
    assert len(classes) == 12 and all(sum(l.startswith(c + "/") for l in lines) == 25 for c in classes)
