"""`xception-edge gate`: exit 0 when every gate passes, 1 when one fails (naming target and
gate), 2 for bad input; never passes vacuously."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from xception_edge.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


_OMIT = object()


def row(
    target,
    *,
    name=_OMIT,
    path=None,
    top1=0.95,
    drop_pp=-0.5,
    ratio=0.995,
    agreement=0.99,
    size=2_000_000,
    p50=10.0,
    images=100,
    same_source_model=True,
):
    """An artifact row; `name` defaults to the target (convert writes OUT/<target>/), None leaves it out."""
    name = target if name is _OMIT else name
    r = {
        "target": target,
        "path": path or f"/nonexistent/{name or target}",
        "images": images,
        "top1": top1,
        "drop_pp": drop_pp,
        "ratio": ratio,
        "agreement": agreement,
        "size_bytes": size,
        "latency": {"p50_ms": p50},
        "same_source_model": same_source_model,
    }
    return r if name is None else {"name": name, **r}


def write_report(tmp_path, rows, *, ref_top1=0.955, **extra):
    """JSON as evaluate writes it (a NaN becomes the bare token NaN, which json accepts)."""
    report = {
        "schema": "xception-edge/report",
        "schema_version": 1,
        "host": {"cpu": "AMD EPYC"},
        "model": {"spec": "model.keras"},
        "reference": {"name": "keras-fp32", "top1": ref_top1},
        "artifacts": rows,
        **extra,
    }
    p = tmp_path / "report.json"
    p.write_text(json.dumps(report))
    return p


def one_error_line(r) -> str:
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


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


@pytest.mark.parametrize(
    "broken,needle",
    [
        ({"agreement": float("nan")}, "NaN"),
        ({"agreement": float("inf")}, "x86-openvino-int8: min_agreement: value missing, not a number, or NaN/inf"),
        ({"images": 0}, "no images"),
        ({"ratio": None}, "missing"),
    ],
)
def test_never_passes_vacuously(tmp_path, broken, needle):
    p = write_report(tmp_path, [row("x86-openvino-int8", **broken)])
    r = run("gate", p)
    assert r.exit_code == 1 and needle in r.output


def test_every_row_is_gated_and_named_by_its_folder(tmp_path):
    """Two artifacts of one target: the first, 50 points worse, must not hide behind the second."""
    p = write_report(
        tmp_path,
        [
            row("arm64-litert-int8", name="int8-broken", drop_pp=-50.0, ratio=0.47, agreement=0.5),
            row("arm64-litert-int8", name="int8-good"),
        ],
    )
    r = run("gate", p, "--json")
    assert r.exit_code == 1
    results = json.loads(r.stdout)["results"]
    by_name = {n: [x for x in results if x["name"] == n] for n in {x["name"] for x in results}}
    assert set(by_name) == {"int8-broken", "int8-good"} and {x["target"] for x in results} == {"arm64-litert-int8"}
    assert sorted(x["gate"] for x in by_name["int8-broken"] if not x["passed"]) == [
        "max_top1_drop_pp",
        "min_agreement",
        "min_top1_ratio",
    ]
    assert [x["passed"] for x in by_name["int8-good"]] == [True, True, True]
    junit = tmp_path / "gates.xml"
    r = run("gate", p, "--junit", junit)
    assert "gate failed: int8-broken (arm64-litert-int8): max_top1_drop_pp = 50 (limit 1)" in r.output
    assert "gate failed: int8-good" not in r.output
    xml = junit.read_text()
    assert 'tests="6" failures="3"' in xml and xml.count('classname="int8-good"') == 3


def test_rows_named_by_path_and_gates_keyed_by_folder_name(tmp_path):
    """Without `name`, the path's basename names the row; a gates table keyed by that name is used
    instead of the target's."""
    p = write_report(
        tmp_path,
        [
            row("x86-openvino-int8", name=None, path="/arts/ov-relaxed", drop_pp=-1.5, ratio=0.985),
            row("x86-openvino-int8", name="ov-strict", drop_pp=-1.5, ratio=0.985),
        ],
    )
    g = tmp_path / "gates.toml"
    g.write_text("[ov-relaxed]\nmax_top1_drop_pp = 2.0\nmin_top1_ratio = 0.98\n[x86-openvino-int8]\nmin_agreement = 0.9\n")
    r = run("gate", p, "--gates", g, "--json")
    assert r.exit_code == 1
    failed = {(x["name"], x["gate"]) for x in json.loads(r.stdout)["results"] if not x["passed"]}
    assert failed == {("ov-strict", "max_top1_drop_pp"), ("ov-strict", "min_top1_ratio")}


@pytest.mark.parametrize(
    "where,value",
    [
        ("row", float("nan")),
        ("row", None),
        ("row", "0.95"),
        ("row", 1.5),
        ("reference", float("nan")),
        ("reference", None),
        ("reference", [0.9]),
    ],
)
def test_a_nan_top1_of_artifact_or_reference_fails(tmp_path, where, value):
    ok = row("x86-openvino-int8")
    if where == "row":
        p = write_report(tmp_path, [{**ok, "top1": value}])
    else:
        p = write_report(tmp_path, [ok], reference={"name": "keras-fp32", "top1": value})
    if value != value:
        assert "NaN" in p.read_text()  # the bare token, as json.dumps writes it
    r = run("gate", p)
    gate = "top1" if where == "row" else "reference_top1"
    assert r.exit_code == 1 and f"gate failed: x86-openvino-int8: {gate}" in r.output
    assert "top-1 is missing, NaN or not a fraction in the report" in r.output


def test_a_row_no_gate_applies_to_fails_unless_declared_ungated(tmp_path):
    rows = [row("x86-openvino-int8"), row("my-custom-int8", drop_pp=-90.0, ratio=0.05, agreement=0.1)]
    p = write_report(tmp_path, rows)
    r = run("gate", p)
    assert r.exit_code == 1 and "gate failed: my-custom-int8: gates: no gate applies to this artifact" in r.output
    g = tmp_path / "gates.toml"
    g.write_text("[my-custom-int8]\nungated = true\n")
    r = run("gate", p, "--gates", g, "--json")
    assert r.exit_code == 0, r.output
    custom = [(x["gate"], x["passed"]) for x in json.loads(r.stdout)["results"] if x["name"] == "my-custom-int8"]
    assert custom == [("ungated", True)]
    g.write_text("[my-custom-int8]\nungated = false\n")
    assert run("gate", p, "--gates", g).exit_code == 1

    art = tmp_path / "my-custom-int8"  # with its manifest: the gates it was converted with
    art.mkdir()
    (art / "manifest.json").write_text(json.dumps({"profile": {"gates": {"max_top1_drop_pp": 2.0, "min_agreement": None}}}))
    p = write_report(tmp_path, [rows[0], {**rows[1], "path": str(art), "manifest_sha256": _sha(art / "manifest.json")}])
    r = run("gate", p)
    assert r.exit_code == 1 and "gate failed: my-custom-int8: max_top1_drop_pp = 90 (limit 2)" in r.output
    (art / "manifest.json").write_text(json.dumps({"profile": {"gates": {"min_agreement": 5}}}))
    p = write_report(tmp_path, [rows[0], {**rows[1], "path": str(art), "manifest_sha256": _sha(art / "manifest.json")}])
    line = one_error_line(run("gate", p))
    assert "manifest.json" in line and "min_agreement = 5 must lie within 0..1" in line


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_manifest_edited_after_the_report_cannot_loosen_its_gates(tmp_path):
    art = tmp_path / "my-custom-int8"
    art.mkdir()
    (art / "manifest.json").write_text(json.dumps({"profile": {"gates": {"max_top1_drop_pp": 2.0}}}))
    bad = {**row("my-custom-int8", drop_pp=-90.0, path=str(art)), "manifest_sha256": _sha(art / "manifest.json")}
    p = write_report(tmp_path, [bad])
    assert run("gate", p).exit_code == 1
    (art / "manifest.json").write_text(json.dumps({"profile": {"gates": {"max_top1_drop_pp": 100.0}}}))
    line = one_error_line(run("gate", p))
    assert "is not the manifest the report measured" in line


@pytest.mark.parametrize("value", [False, None, "true", 1, "absent"])
def test_an_artifact_of_another_model_fails(tmp_path, value):
    ok = row("x86-openvino-int8", same_source_model=value)
    if value == "absent":
        del ok["same_source_model"]
    r = run("gate", write_report(tmp_path, [ok]))
    assert r.exit_code == 1
    assert (
        "gate failed: x86-openvino-int8: same_source_model: the artifact was converted from another model than "
        "the report's --model"
    ) in r.output


def test_evaluate_records_an_unconfirmed_source_model_as_false(capsys):
    from pathlib import Path
    from types import SimpleNamespace

    from xception_edge.evaluation import Artifact, same_source_model

    def art(manifest):  # same_source_model reads the sha256 a manifest records of its source model
        recorded = (manifest.get("source_model") or {}).get("sha256")
        return Artifact(Path("/arts/ov-int8"), SimpleNamespace(source_sha256=recorded), "0" * 64)

    assert same_source_model(art({"source_model": {"sha256": "ab" * 32}}), "ab" * 32) is True
    assert capsys.readouterr().err == ""
    assert same_source_model(art({"source_model": {"sha256": "cd" * 32}}), "ab" * 32) is False
    assert "ov-int8 was converted from another model (sha256 cdcdcdcdcdcd" in capsys.readouterr().err
    for manifest, src in [
        ({}, "ab" * 32),
        ({"source_model": None}, "ab" * 32),
        ({"source_model": {"sha256": 7}}, 7),
        ({"source_model": {"sha256": "ab" * 32}}, None),
        ({"source_model": {"sha256": ""}}, ""),
    ]:
        assert same_source_model(art(manifest), src) is False
        assert "ov-int8 cannot be confirmed to come from --model" in capsys.readouterr().err


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


@pytest.mark.parametrize(
    "body,needle",
    [
        ("[x86-openvino-int8]\nmax_drop = 1\n", "unknown key 'max_drop'"),
        ("[x86-openvino-int8]\nmin_agreement = -0.5\n", "non-negative"),
        ("not toml [", "not valid TOML"),
        ("[x86-openvino-int8]\nmin_agreement = 5\n", "[x86-openvino-int8] min_agreement = 5 must lie within 0..1"),
        ("[x86-openvino-int8]\nmin_top1_ratio = 1.01\n", "[x86-openvino-int8] min_top1_ratio = 1.01 must lie within 0..1"),
        ("[x86-openvino-int8]\nmax_top1_drop_pp = nan\n", "[x86-openvino-int8] max_top1_drop_pp = nan must be a finite"),
        ("[x86-openvino-int8]\nmax_size_mb = inf\n", "[x86-openvino-int8] max_size_mb = inf must be a finite"),
        ("[x86-openvino-int8]\nmax_p50_latency_ms = 1e400\n", "max_p50_latency_ms = inf must be a finite"),
        ("[x86-openvino-int8]\nungated = 1\n", "[x86-openvino-int8] ungated = 1 must be true or false"),
        ("[x86-openvino-int8]\nungated = true\nmin_agreement = 0.9\n", "ungated = true cannot be combined with limits"),
    ],
)
def test_bad_gates_files(tmp_path, body, needle):
    p = write_report(tmp_path, [row("x86-openvino-int8")])
    g = tmp_path / "gates.toml"
    g.write_text(body)
    line = one_error_line(run("gate", p, "--gates", g))
    assert needle in line and str(g) in line


@pytest.mark.parametrize(
    "line,needle",
    [  # (NaN and inf: targets.py's own number check)
        ("min_agreement = 5", "[gates] min_agreement = 5"),
        ("min_top1_ratio = 1.5", "[gates] min_top1_ratio = 1.5"),
    ],
)
def test_profile_gates_are_checked_like_a_gates_file(tmp_path, line, needle):
    from xception_edge.errors import BadInput
    from xception_edge.targets import load_profile

    f = tmp_path / "my.toml"
    f.write_text(f'name = "my"\nbackend = "litert"\nformat = "tflite"\nprecision = "fp32"\n[gates]\n{line}\n')
    with pytest.raises(BadInput) as err:
        load_profile(f)
    assert needle in str(err.value) and "must lie within 0..1" in str(err.value) and str(f) in str(err.value)


def test_output_paths_are_checked_before_any_work(tmp_path):
    p = write_report(tmp_path, [row("x86-openvino-int8")])
    folder = tmp_path / "out"
    folder.mkdir()
    junit = tmp_path / "gates.xml"
    line = one_error_line(run("gate", p, "--junit", junit, f"--json={folder}"))
    assert "--json" in line and str(folder) in line and not junit.exists()  # nothing half-written
    line = one_error_line(run("gate", p, "--junit", folder))
    assert "--junit" in line and str(folder) in line
    line = one_error_line(run("gate", p, "--junit", p / "gates.xml"))  # the "folder" is the report file
    assert "--junit" in line
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out", "report.json"] and not list(folder.iterdir())


_OK_ROW = row("x86-openvino-int8")


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"artifacts": None}, "'artifacts' must be a non-empty list"),
        ({"artifacts": []}, "'artifacts' must be a non-empty list"),
        ({"artifacts": {"x86-openvino-int8": _OK_ROW}}, "'artifacts' must be a non-empty list"),
        ({"artifacts": "artifacts"}, "'artifacts' must be a non-empty list"),
        ({"artifacts": None, "-": "artifacts"}, "'artifacts' must be a non-empty list"),
        ({"artifacts": [None]}, "artifacts[0] must be an object"),
        ({"artifacts": [_OK_ROW, []]}, "artifacts[1] must be an object"),
        ({"artifacts": [{**_OK_ROW, "target": None}]}, "artifacts[0].target must be a string"),
        ({"artifacts": [{**_OK_ROW, "name": ["a"]}]}, "artifacts[0].name must be a string"),
        ({"artifacts": [{**_OK_ROW, "latency": 12.5}]}, "artifacts[0].latency must be an object or null"),
        ({"reference": None}, "'reference' must be an object"),
        ({"reference": None, "-": "reference"}, "'reference' must be an object"),
        ({"host": ["AMD EPYC"]}, "'host' must be an object"),
        ({"host": {"cpu": None}}, "'host.cpu' must be a string"),
        ({"model": "model.keras"}, "'model' must be an object"),
        ({"artifacts": [{**_OK_ROW, "name": "\ud800"}]}, "not valid Unicode"),
    ],
)
def test_a_malformed_report_is_one_line_bad_input(tmp_path, change, needle):
    change = dict(change)
    drop = change.pop("-", None)
    p = write_report(tmp_path, [_OK_ROW], **change)
    if drop:
        data = json.loads(p.read_text())
        del data[drop]
        p.write_text(json.dumps(data))
    junit = tmp_path / "gates.xml"
    line = one_error_line(run("gate", p, "--junit", junit))
    assert needle in line and str(p) in line and not junit.exists()


def test_old_or_foreign_report_is_bad_input(tmp_path):
    p = write_report(tmp_path, [row("x86-openvino-int8")], schema_version=0)
    r = run("gate", p)
    assert r.exit_code == 2 and "schema version 0" in r.output
    (tmp_path / "other.json").write_text('{"hello": 1}')
    assert run("gate", tmp_path / "other.json").exit_code == 2
    assert run("gate", tmp_path / "missing.json").exit_code == 2


def test_convert_evaluate_gate_catches_a_broken_conversion(converted_all, tmp_path):
    """Real pipeline: a good int8 (the suite's shared conversion) passes its gates; one calibrated
    on blank images (with --no-verify, so it gets written) fails them, with the target named."""
    import shutil

    shared, _, (model, _, val) = converted_all
    good = tmp_path / "good"
    shutil.copytree(shared / "arm64-litert-int8", good / "arm64-litert-int8")
    assert (
        run("evaluate", "--model", model, "--artifacts", good, "--data", val, "--report", tmp_path / "rg", "--runs", 3).exit_code
        == 0
    )
    r = run("gate", tmp_path / "rg" / "report.json")
    assert r.exit_code == 0, r.output

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(10):
        Image.new("RGB", (71, 71), (0, 0, 0)).save(blank / f"b{i}.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    bad = tmp_path / "bad"
    r = run(
        "convert",
        "--model",
        model,
        "--target",
        "arm64-litert-int8",
        "--calibration",
        blank,
        "--labels",
        labels,
        "--no-verify",
        "--out",
        bad,
    )
    assert r.exit_code == 0, r.output
    assert (
        run("evaluate", "--model", model, "--artifacts", bad, "--data", val, "--report", tmp_path / "rb", "--runs", 3).exit_code
        == 0
    )
    r = run("gate", tmp_path / "rb" / "report.json")
    assert r.exit_code == 1 and "gate failed: arm64-litert-int8" in r.output
