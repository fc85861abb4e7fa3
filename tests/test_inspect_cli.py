"""`xception-edge inspect`: per-layer SQNR of every int8 artifact, ranked, with the layers to
blame; on a model with a planted outlier channel, every backend must blame that layer."""

import json

import pytest
from click.testing import CliRunner

from xception_edge.cli import cli

INT8 = ["x86-openvino-int8", "x86-onnxruntime-int8", "arm64-litert-int8"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def broken_artifacts(outlier_model, tmp_path_factory):
    """The outlier model converted (unverified, so the collapsed artifacts are written) to every int8 backend + one fp32."""
    model, train, _ = outlier_model
    out = tmp_path_factory.mktemp("inspect") / "art"
    targets = [a for t in INT8 + ["openvino-fp32"] for a in ("--target", t)]
    r = run(
        "convert",
        "--model",
        model,
        *targets,
        "--calibration",
        train,
        "--num-calibration",
        "32",
        "--no-verify",
        "--transform",
        "none",  # without the profiles' CLE, which repairs this model
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    return model, train, out


def test_inspect_blames_the_outlier_layer_on_every_backend(broken_artifacts, tmp_path):
    model, train, out = broken_artifacts
    r = run("inspect", out, "--model", model, "--calibration", train, "--num-images", "8", "--report", tmp_path / "rep", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["schema"] == "xception-edge/inspect" and res["version"] == 1
    by_target = {a["target"]: a for a in res["artifacts"]}
    assert sorted(by_target) == sorted(INT8)  # the fp32 artifact is skipped
    for target, a in by_target.items():
        assert a["unmatched_weighted_layers"] == [], target
        sqnr = [e["sqnr_db"] for e in a["layers"]]
        assert sqnr == sorted(sqnr), target  # worst first
        assert a["blame"][0] == "block3_sepconv1", (target, a["blame"][:5])
        kinds = {e["kind"] for e in a["layers"]}
        assert {"conv", "depthwise", "pointwise", "dense"} <= kinds, (target, kinds)
        shares = sum(e["mac_share"] for e in a["layers"] if e["kind"] != "residual-add")
        assert 0.95 < shares <= 1.0001, (target, shares)
    for name in ("inspect.json", "inspect.md", "inspect.html"):
        assert (tmp_path / "rep" / name).is_file()
    assert "data:image/png;base64," in (tmp_path / "rep" / "inspect.html").read_text()
    assert "block3_sepconv1" in (tmp_path / "rep" / "inspect.md").read_text()


def test_inspect_bad_input(broken_artifacts, small_model, tmp_path):
    model, train, out = broken_artifacts
    other_model = small_model[0]
    r = run("inspect", out / "x86-openvino-int8", "--model", other_model, "--calibration", train, "--report", tmp_path / "r")
    assert r.exit_code == 2 and "is not the model" in r.output and "Traceback" not in r.output
    r = run("inspect", out / "openvino-fp32", "--model", model, "--calibration", train, "--report", tmp_path / "r")
    assert r.exit_code == 2 and "no int8 artifact" in r.output
    r = run("inspect", out, "--model", model, "--calibration", train, "--num-images", "0", "--report", tmp_path / "r")
    assert r.exit_code == 2 and "--num-images 0" in r.output
    r = run("inspect", tmp_path / "nowhere", "--model", model, "--calibration", train, "--report", tmp_path / "r")
    assert r.exit_code == 2
