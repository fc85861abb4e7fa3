"""Files `gate` and `evaluate --resume` read back from disk are untrusted: the report JSON, the
gates TOML and the cached results under REPORT/results/. Whatever is in them, the outcome is a
one-line bad-input error (exit 2), a clean gate verdict (exit 0/1), or a result computed again:
never a traceback. Property-based (hypothesis) plus the cases that used to crash."""

from __future__ import annotations

import copy
import json
import math

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xception_edge.cli import cli
from xception_edge.evaluation import KERAS, ResultStore
from xception_edge.records import Report, ReportRow

LABELS = ["a", "b", "c"]
KEY = "0123456789abcdef" * 4
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CLI = settings(FAST, max_examples=120)  # each example runs the `gate` command
DELETE = object()  # a substitution that removes the field


# ------------------------------------------------------------------ valid records, as evaluate writes them
def a_row(name: str, *, keras: bool = False, top1: float = 0.9) -> dict:
    drop = 0.0 if keras else -0.5
    row = {
        "name": name,
        "path": f"/nonexistent/{name}",
        "target": None if keras else "x86-openvino-int8",
        "backend": "keras" if keras else "openvino",
        "format": "keras" if keras else "openvino-ir",
        "precision": "fp32" if keras else "int8",
        "hardware": "any",
        "size_bytes": 2_000_000,
        "threads": 2,
        "images": 30,
        "top1": top1,
        "top5": 1.0,
        "drop_pp": drop,
        "top5_drop_pp": 0.0,
        "ratio": 0.995,
        "meets_mlperf_99": True,
        "agreement": 1.0 if keras else 0.99,
        "flipped": 0 if keras else 1,
        "flips_per_class": {} if keras else {"a": [{"image": "a/a_000.png", "keras": "a", "artifact": "b"}]},
        "per_class": {c: {"images": 10, "top1": top1, "top5": 1.0, "drop_pp": drop} for c in LABELS},
        "latency": {
            "runs": 3,
            "warmup": 1,
            "threads": 2,
            "p50_ms": 1.5,
            "p90_ms": 2.0,
            "p99_ms": 2.1,
            "mean_ms": 1.6,
            "std_ms": 0.1,
            "min_ms": 1.4,
            "max_ms": 2.1,
            "load_ms": 30.0,
            "first_inference_ms": 5.0,
            "samples_ms": [1.4, 1.5, 2.1],
        },
        "cpu_warning": None,
    }
    if not keras:
        row.update(
            manifest_sha256="f" * 64, float_layers=["block4_sepconv1"], float_mac_share=0.05, max_drop_pp=None, seconds=1.2
        )
    return row


def keras_result() -> dict:
    return {
        "key": KEY,
        "row": a_row(KERAS, keras=True, top1=0.9 + 1 / 300),
        "predictions": {"a/a_000.png": "a"},
        "model_sha256": "e" * 64,
        "model": {"kind": "keras", "input": [71, 71, 3], "num_classes": 3},
        "data": {
            "images": 30,
            "decoded": 29,
            "undecodable": [{"image": "c/x.png", "label": "c", "error": "broken"}],
            "per_class_images": {c: 10 for c in LABELS},
        },
    }


def artifact_result(name: str = "ov-int8") -> dict:
    return {"key": KEY, "row": a_row(name)}


def full_report() -> dict:
    keras = keras_result()
    return {
        "schema": "xception-edge/report",
        "schema_version": 1,
        "created": "2025-01-01T00:00:00+00:00",
        "xception_edge": "0.1.0",
        "host": {
            "machine": "x86_64",
            "system": "Linux",
            "cpu": "AMD EPYC",
            "cpu_count": 2,
            "int8_flags": ["avx2"],
            "python": "3.11",
        },
        "settings": {"runs": 3, "warmup": 1, "decode_threads": 2, "batch": 32, "mlperf_ratio": 0.99},
        "model": {"spec": "small.keras", "sha256": "e" * 64, **keras["model"]},
        "preprocessing": {"height": 71, "width": 71},
        "labels": LABELS,
        "data": {**keras["data"], "source": "val", "root": "val", "form": "folders", "sha256": "d" * 64},
        "reference": {**keras["row"], "reused": False},
        "artifacts": [
            {**a_row("ov-int8-a"), "same_source_model": True, "reused": False},
            {**a_row("ov-int8-b"), "same_source_model": True, "reused": False},
        ],
        "timing": {"total_seconds": 3.0},
    }


# ------------------------------------------------------------------ generators
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def locations(obj, at=()):
    """Every place in a JSON value, as a path of keys and indices (the root is ())."""
    yield at
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from locations(v, (*at, k))


def substituted(obj, at, value):
    if not at:
        return value
    out = copy.deepcopy(obj)
    parent = out
    for k in at[:-1]:
        parent = parent[k]
    if value is DELETE:
        del parent[at[-1]]
    else:
        parent[at[-1]] = value
    return out


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean(r, bad_file) -> None:
    """Exit 0/1 with a verdict, or exit 2 with one line naming the bad file: never a traceback."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code in (0, 1, 2), r.output
    if r.exit_code == 2:
        lines = [l for l in r.output.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and str(bad_file) in lines[0], r.output


def is_fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1


# ------------------------------------------------------------------ the report given to `gate`
def test_the_valid_report_passes_with_both_artifacts_gated(tmp_path):
    """The base of the properties below: both rows (one target) gated, by folder name."""
    p = tmp_path / "report.json"
    p.write_text(json.dumps(full_report()))
    r = run("gate", p, "--json")
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout)["results"]
    assert sorted({x["name"] for x in results}) == ["ov-int8-a", "ov-int8-b"] and len(results) == 6


# Where `gate` reads: drawn as often as the rest of the report together.
_READ = [
    ("artifacts",),
    ("reference",),
    ("host",),
    ("host", "cpu"),
    ("model",),
    ("schema_version",),
    ("reference", "top1"),
    *[("artifacts", i) for i in (0, 1)],
    *[
        ("artifacts", i, k)
        for i in (0, 1)
        for k in (
            "name",
            "path",
            "target",
            "images",
            "top1",
            "drop_pp",
            "ratio",
            "agreement",
            "size_bytes",
            "latency",
            "same_source_model",
            "precision",
        )
    ],
]


@CLI
@given(data=st.data())
def test_any_value_anywhere_in_a_report_is_bad_input_or_a_verdict(tmp_path, data):
    report = full_report()
    at = data.draw(st.sampled_from(list(locations(report))) | st.sampled_from(_READ), label="at")
    value = data.draw(JSON | st.just(DELETE) if at else JSON, label="value")
    p = tmp_path / "report.json"
    p.write_text(json.dumps(substituted(report, at, value)))
    r = run("gate", p)
    assert_clean(r, p)


GATED = [
    ("reference", "top1"),
    ("artifacts", 0, "top1"),
    ("artifacts", 1, "top1"),
    ("artifacts", 0, "agreement"),
    ("artifacts", 1, "ratio"),
    ("artifacts", 0, "drop_pp"),
    ("artifacts", 1, "images"),
    ("artifacts", 0, "same_source_model"),
]


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@CLI
@given(at=st.sampled_from(GATED), value=JSON.filter(lambda v: not is_number(v)) | st.just(DELETE))
def test_a_gated_value_that_is_not_a_number_never_passes(tmp_path, at, value):
    """NaN, inf, null, a string, a list, a missing field… where a gate reads: exit 1 or 2, never 0."""
    if at[-1] == "same_source_model" and value is True:
        return
    p = tmp_path / "report.json"
    p.write_text(json.dumps(substituted(full_report(), at, value)))
    r = run("gate", p)
    assert_clean(r, p)
    assert r.exit_code in (1, 2), r.output


# ------------------------------------------------------------------ the gates TOML file
_KEYS = ["max_top1_drop_pp", "min_top1_ratio", "min_agreement", "max_size_mb", "max_p50_latency_ms", "latency_host", "ungated"]
_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=8)
NUMBER = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1) | st.floats(0, 5)
TOML_SCALAR = NUMBER | st.booleans() | _TEXT
TOML_VALUE = TOML_SCALAR | st.lists(st.integers(0, 9), max_size=3)
TABLE = (
    st.dictionaries(st.sampled_from(_KEYS[:5]), NUMBER, max_size=3)  # numeric limits only
    | st.dictionaries(st.sampled_from(_KEYS), TOML_VALUE, max_size=4)
    | st.dictionaries(st.sampled_from(_KEYS) | _TEXT, TOML_VALUE, max_size=4)
)
NAMES = st.sampled_from(["x86-openvino-int8", "ov-int8-a", "ov-int8-b", "arm64-litert-int8"]) | _TEXT
GATES_FILES = st.dictionaries(NAMES, TABLE, max_size=3) | st.dictionaries(NAMES, TABLE | TOML_SCALAR, max_size=3)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(v)


def toml_text(data: dict) -> str:
    key = lambda k: json.dumps(k, ensure_ascii=False)  # noqa: E731 (a quoted TOML key)
    lines = [f"{key(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += [f"[{key(name)}]", *(f"{key(k)} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


@CLI
@given(data=GATES_FILES)
def test_any_gates_file_is_bad_input_or_a_verdict(tmp_path, data):
    report, gates = tmp_path / "report.json", tmp_path / "gates.toml"
    report.write_text(json.dumps(full_report()))
    gates.write_text(toml_text(data), encoding="utf-8")
    r = run("gate", report, "--gates", gates)
    assert_clean(r, gates)
    out_of_range = [
        (n, k)
        for n, t in data.items()
        if isinstance(t, dict)
        for k, v in t.items()
        if k in ("min_top1_ratio", "min_agreement") and isinstance(v, (int, float)) and not is_fraction(v)
    ]
    if out_of_range:
        assert r.exit_code == 2, (out_of_range, r.output)


# ------------------------------------------------------------------ the --resume results
@pytest.mark.parametrize(
    "kind,content,why",
    [
        ("artifact", "[]", "must be a JSON object"),
        ("artifact", '"row"', "must be a JSON object"),
        ("artifact", json.dumps({"key": KEY}), "row must be an object"),
        ("artifact", json.dumps({"key": KEY, "row": []}), "row must be an object"),
        ("artifact", json.dumps({"key": KEY, "row": {**a_row("ov-int8"), "latency": None}}), "row.latency must be an object"),
        (
            "artifact",
            json.dumps({"key": KEY, "row": {**a_row("ov-int8"), "top1": float("nan")}}),
            "row.top1 must be a finite number",
        ),
        (
            "artifact",
            json.dumps({"key": KEY, "row": {**a_row("ov-int8"), "per_class": {"a": 0.9}}}),
            "row.per_class['a'] must be an object",
        ),
        (
            "artifact",
            json.dumps({"key": KEY, "row": {**a_row("ov-int8"), "per_class": {"zebra": a_row("x")["per_class"]["a"]}}}),
            "not among the artifacts' labels",
        ),
        ("artifact", json.dumps({"key": KEY, "row": a_row("another-folder")}), "its row is for 'another-folder'"),
        (
            "artifact",
            json.dumps({"key": KEY, "row": {**a_row("ov-int8"), "flips_per_class": {"a": [None]}}}),
            "row.flips['a'][0] must be an object",
        ),
        ("artifact", json.dumps({"row": a_row("ov-int8")}), "it has no key"),
        (
            "keras",
            json.dumps({k: v for k, v in keras_result().items() if k != "predictions"}),
            "result.predictions must be an object",
        ),
        ("keras", json.dumps({**keras_result(), "predictions": ["a"]}), "result.predictions must be an object"),
        ("keras", json.dumps({**keras_result(), "data": None}), "result.data must be an object"),
        ("keras", json.dumps({**keras_result(), "model": {"kind": "keras", "sha256": "0" * 64}}), "model holds other fields"),
        (
            "keras",
            json.dumps({**keras_result(), "data": {**keras_result()["data"], "undecodable": [1]}}),
            "data.undecodable[0] must be an object",
        ),
    ],
)
def test_a_malformed_resume_result_is_computed_again(tmp_path, capsys, kind, content, why):
    name = KERAS if kind == "keras" else "ov-int8"
    store = ResultStore(tmp_path, resume=True, **({"labels": LABELS} if "labels" in why else {}))
    path = tmp_path / f"{name}-{KEY[:16]}.json"
    path.write_text(content)
    assert (store.load(name, KEY, keras=True) if kind == "keras" else store.load(name, KEY)) is None
    err = capsys.readouterr().err
    assert f"{path} is not a usable result" in err and why in err and f"computing {name} again" in err
    assert store.used == set()


def test_valid_resume_results_are_reused(tmp_path, capsys):
    store = ResultStore(tmp_path, resume=True, labels=LABELS)
    for name, data in ((KERAS, keras_result()), ("ov-int8", artifact_result())):
        (tmp_path / f"{name}-{KEY[:16]}.json").write_text(json.dumps(data))
    for got, want in ((store.load(KERAS, KEY, keras=True), keras_result()), (store.load("ov-int8", KEY), artifact_result())):
        assert isinstance(got["row"], ReportRow) and {**got, "row": got["row"].to_dict()} == want
    assert store.load("ov-int8", "f" * 64) is None  # another key: another file, nothing to reuse
    assert capsys.readouterr().err == "" and len(store.used) == 2


def _render(result: dict, keras: bool) -> None:
    """What evaluate does with a reused result: score a new artifact against it and write the report."""
    import dataclasses

    from xception_edge.evaluation import _compare
    from xception_edge.report import markdown

    report = Report.from_dict(full_report(), "report.json")
    rows = list(report.artifacts)
    if keras:
        ref, preds = result["row"], result["predictions"]
        acc = {
            "images": 30,
            "top1": 0.8,
            "top5": 1.0,
            "per_class": {c: {"images": 10, "top1": 0.8, "top5": 1.0} for c in result["data"]["per_class_images"]},
        }
        label_of = {k: "a" for k in preds}
        row = _compare(ReportRow.from_dict(a_row("ov-int8-a"), "row.json"), acc, dict(preds), ref, preds, label_of)
        rows[0] = dataclasses.replace(row, same_source_model=True, reused=False)
        data = {**result["data"], "source": "val", "root": "val", "form": "folders", "sha256": "d" * 64}
        report = dataclasses.replace(report, reference=dataclasses.replace(ref, reused=True), data=data)
    else:
        rows[0] = dataclasses.replace(result["row"], same_source_model=True, reused=True)
    assert "| model | backend |" in markdown(dataclasses.replace(report, artifacts=tuple(rows)))


@FAST
@given(data=st.data())
def test_any_value_anywhere_in_a_resume_result_is_reused_or_computed_again(tmp_path, data):
    keras = data.draw(st.booleans(), label="keras")
    valid = keras_result() if keras else artifact_result()
    name = KERAS if keras else "ov-int8"
    at = data.draw(st.sampled_from(list(locations(valid))), label="at")
    value = data.draw(JSON | st.just(DELETE) if at else JSON, label="value")
    content = substituted(valid, at, value)
    path = tmp_path / f"{name}-{KEY[:16]}.json"
    path.write_text(json.dumps(content))
    got = ResultStore(tmp_path, resume=True).load(name, KEY, **({"keras": True} if keras else {}))
    if got is not None:
        _render(got, keras)  # whatever load accepts, evaluate can use
