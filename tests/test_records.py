"""The typed records (xception_edge/records/): to_dict gives back the JSON they were read from,
from_dict refuses a field of the wrong type with one line naming the file and the field, and
every record is frozen."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import subprocess
import sys

import pytest

from xception_edge.artifact import read_manifest
from xception_edge.errors import BadInput
from xception_edge.records import (
    BudgetAttempt,
    BudgetRecord,
    Manifest,
    Report,
    ReportRow,
    TensorSpec,
    Verification,
)

# The keys convert writes, in its order (a manifest without --max-drop has no accuracy_budget).
CONVERT_KEYS = [
    "schema", "schema_version", "target", "description", "hardware", "backend", "format", "precision", "threads",
    "model_file", "io", "source_model", "preprocessing", "labels", "labels_from", "host", "tools", "calibration",
    "conversion", "profile", "created", "verification", "files",
]  # fmt: skip


def _manifests(out):
    return sorted(p for p in out.iterdir() if (p / "manifest.json").is_file())


# ------------------------------------------------------------------ Manifest
def test_every_converted_manifest_round_trips_byte_for_byte(converted_all):
    out = converted_all[0]
    folders = _manifests(out)
    assert len(folders) >= 6
    for folder in folders:
        path = folder / "manifest.json"
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        m = Manifest.from_dict(data, path, folder)
        assert m.to_dict() == data and list(m.to_dict()) == list(data)
        assert json.dumps(m.to_dict(), indent=2) + "\n" == text  # what write_manifest writes
        # no on-disk change: the keys and order convert always wrote (and `transforms` after
        # `profile` when the profile applied some, e.g. CLE on arm64-litert-int8)
        keys = CONVERT_KEYS[:20] + ["transforms"] + CONVERT_KEYS[20:] if "transforms" in data else CONVERT_KEYS
        assert list(data) == keys, folder.name
        assert read_manifest(folder) == m
        assert isinstance(m.input, TensorSpec) and isinstance(m.verification, Verification) and m.verification.passed
        assert m.to_dict()["verification"]["passed"] is True and m.verification_skipped is None
        assert m.labels == tuple(data["labels"]) and m.preprocessing.height == data["preprocessing"]["height"]
        model_files = [p for p in folder.iterdir() if p.suffix not in (".txt", ".json", ".npz")]  # .npz: CLE's scales
        assert m.model_bytes == sum(p.stat().st_size for p in model_files) > 0


def test_unknown_keys_round_trip_and_a_made_manifest_writes_the_convert_order(converted_all):
    folder = _manifests(converted_all[0])[0]
    data = json.loads((folder / "manifest.json").read_text())
    newer = {**data, "from_a_newer_version": {"x": [1, 2]}, "verification": {**data["verification"], "extra": 3}}
    m = Manifest.from_dict(newer, folder / "manifest.json", folder)
    assert m.extra == {"from_a_newer_version": {"x": [1, 2]}} and m.verification.extra == {"extra": 3}
    assert m.to_dict() == newer
    made = dataclasses.replace(m, extra={}, verification=dataclasses.replace(m.verification, extra={}, _keys=()), _keys=())
    assert list(made.to_dict()) == CONVERT_KEYS and made.to_dict() == data  # made in code: convert's keys, in order
    skipped = dataclasses.replace(made, verification=None, verification_skipped="--no-verify")
    assert skipped.to_dict()["verification"] == {"skipped": "--no-verify"}
    again = Manifest.from_dict(skipped.to_dict(), folder / "manifest.json", folder)
    assert again.verification is None and again.verification_skipped == "--no-verify"


def _manifest_with(folder, edit):
    data = json.loads((folder / "manifest.json").read_text())
    edit(data)
    return data


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda m: m["verification"].update(agreement="high"), "'verification.agreement'"),
        (lambda m: m["verification"].update(images=0), "'verification.images'"),
        (lambda m: m["verification"].update(mode="vibes"), "'verification.mode'"),
        (lambda m: m["verification"].update(passed="yes"), "'verification.passed'"),
        (lambda m: m.update(verification={"skipped": 1}), "'verification.skipped'"),
        (lambda m: m.update(accuracy_budget=[]), "'accuracy_budget'"),
        (lambda m: m.update(accuracy_budget={"method": "x"}), "'accuracy_budget.validation'"),
        (lambda m: m["io"]["input"].update(zero_point=0.5), "'io.input.zero_point'"),
        (lambda m: m["source_model"].update(sha256=7), "'source_model.sha256'"),
        (lambda m: m["host"].update(int8_flags="avx2"), "'host.int8_flags'"),
        (lambda m: m["calibration"].update(count="300"), "'calibration.count'"),
        (lambda m: m.update(hardware=64), "'hardware'"),
        (lambda m: m["profile"]["quantization"].update(ignored_scope="block1"), "'profile.quantization.ignored_scope'"),
    ],
)
def test_manifest_from_dict_refuses_wrong_types(converted_all, edit, field):
    folder = converted_all[0] / "arm64-litert-int8"
    path = folder / "manifest.json"
    with pytest.raises(BadInput) as err:
        Manifest.from_dict(_manifest_with(folder, edit), path, folder)
    message = str(err.value)
    assert str(path) in message and field in message and "\n" not in message and "convert the model again" in message


# ------------------------------------------------------------------ BudgetRecord, Verification, TensorSpec
BUDGET = {
    "method": "nncf.quantize_with_accuracy_control",
    "max_drop_pp": 5,
    "validation": "val",
    "validation_images": 30,
    "fp32_top1": 0.9,
    "max_float_mac_share": 0.2,
    "drop_pp": 1.5,
    "float_layers": ["block3_sepconv1"],
    "float_mac_share": 0.05,
    "attempts": [
        {"float_layers": [], "float_mac_share": 0.0, "drop_pp": 60.0},
        {"method": "nncf.quantize_with_accuracy_control", "float_layers": ["block3_sepconv1"], "float_mac_share": 0.05,
         "drop_pp": 1.5},
    ],
}  # fmt: skip


def test_budget_record_round_trips_and_keeps_the_chosen_attempt():
    b = BudgetRecord.from_dict(copy.deepcopy(BUDGET), "m.json")
    assert b.to_dict() == BUDGET and list(b.to_dict()) == list(BUDGET)
    assert b.attempts[1].method == "nncf.quantize_with_accuracy_control" and b.float_layers == ("block3_sepconv1",)
    first = BudgetAttempt((), 0.0, 60.0)
    made = BudgetRecord("ranked", 5, "val", 30, 0.9, 0.2, 60.0, (), 0.0, (first,))
    kept = made.kept(b.attempts[1], [first, b.attempts[1]])
    assert kept.method == "nncf.quantize_with_accuracy_control" and kept.drop_pp == 1.5 and len(kept.attempts) == 2
    assert made.to_dict()["attempts"] == [{"float_layers": [], "float_mac_share": 0.0, "drop_pp": 60.0}]  # no method key


@pytest.mark.parametrize(
    "change,field",
    [
        ({"validation_images": True}, "accuracy_budget.validation_images"),
        ({"drop_pp": float("nan")}, "accuracy_budget.drop_pp"),
        ({"float_layers": [1]}, "accuracy_budget.float_layers"),
        ({"attempts": {}}, "accuracy_budget.attempts"),
        ({"attempts": [{"float_layers": [], "float_mac_share": 0.0, "drop_pp": "0"}]}, "accuracy_budget.attempts[0].drop_pp"),
    ],
)
def test_budget_record_refuses_wrong_types(change, field):
    with pytest.raises(BadInput, match=re.escape(f"m.json: '{field}' must be")):
        BudgetRecord.from_dict({**copy.deepcopy(BUDGET), **change}, "m.json")


def test_verification_and_tensor_spec_round_trip_and_refuse_wrong_types():
    v = Verification(30, 0.97, 0.95, 0.01, 0.001, 0.9, "30 images of val", 0.8)
    d = v.to_dict()
    assert d["passed"] is True and list(d)[-1] == "passed" and Verification.from_dict(d, "m.json") == v
    assert Verification.from_dict(d, "m.json").to_dict() == d
    with pytest.raises(BadInput, match="'verification.max_abs_diff_limit'"):
        Verification.from_dict({**d, "mode": "distribution"}, "m.json")  # undecided source: the limit it was gated on
    t = TensorSpec("in", "int8", (1, 71, 71, 3), 0.0078, -1)
    assert TensorSpec.from_dict(t.to_dict()) == t and t.to_dict()["shape"] == [1, 71, 71, 3]
    with pytest.raises(BadInput, match="'io.input.shape'"):
        TensorSpec.from_dict({**t.to_dict(), "shape": [1, "71"]}, "m.json", "io.input")


# ------------------------------------------------------------------ ReportRow, Report
def _row(name="ov-int8", **over) -> dict:
    from test_untrusted_reports import a_row

    return {**a_row(name), "reused": False, "same_source_model": True, **over}


def test_report_rows_round_trip_and_a_keras_row_made_in_code_has_no_artifact_fields():
    from test_untrusted_reports import full_report

    row = _row()
    assert ReportRow.from_dict(row, "r.json").to_dict() == row
    parsed = ReportRow.from_dict(row, "r.json")
    assert parsed.float_layers == ("block4_sepconv1",) and parsed.p50_ms == 1.5 and parsed.same_source_model is True
    report = full_report()
    typed = Report.from_dict(report, "report.json")
    assert typed.to_dict() == report and list(typed.to_dict()) == list(report)
    assert [r.name for r in typed.rows] == ["keras-fp32", "ov-int8-a", "ov-int8-b"]
    keras = ReportRow(name="keras-fp32", path="/m.keras", backend="keras", latency={"p50_ms": 1.0}, reused=True)
    d = keras.to_dict()
    assert "manifest_sha256" not in d and "float_layers" not in d and "seconds" not in d and "same_source_model" not in d
    assert d["target"] is None and d["ratio"] is None and d["reused"] is True  # always written, null when unknown
    art = dataclasses.replace(keras, manifest_sha256="f" * 64)
    assert {"float_layers", "float_mac_share", "max_drop_pp", "seconds"} <= set(art.to_dict())


@pytest.mark.parametrize(
    "change,problem",
    [
        ({"top1": "0.9"}, "row.top1 must be a finite number"),
        ({"threads": 2.5}, "row.threads must be a whole number or null"),
        ({"reused": "no"}, "row.reused must be true or false or null"),
        ({"per_class": {"a": {"images": 1, "top1": None, "drop_pp": 0}}}, "row.per_class['a'].top1 must be a finite number"),
        ({"latency": {"p50_ms": 1, "p90_ms": 2, "samples_ms": [1, float("inf")]}}, "row.latency.samples_ms must be a list"),
        ({"float_layers": [3]}, "row.float_layers must be a list of strings"),
    ],
)
def test_report_row_from_dict_refuses_wrong_types(change, problem):
    with pytest.raises(BadInput) as err:
        ReportRow.from_dict(_row(**change), "results/ov-int8.json")
    assert err.value.problem == problem or err.value.problem.startswith(problem)
    assert str(err.value).startswith(f"results/ov-int8.json: {err.value.problem}") and "\n" not in str(err.value)


def test_report_read_for_a_gate_keeps_structure_errors_and_reads_bad_measures_as_none():
    from test_untrusted_reports import full_report

    report = full_report()
    report["artifacts"][0].update(top1="NaN?", images=30.0, same_source_model="yes")
    row = Report.from_dict(report, "report.json").artifacts[0]
    assert row.top1 is None and row.images == 30.0 and row.same_source_model is None  # gate fails these itself
    report["artifacts"][1]["target"] = 5
    with pytest.raises(BadInput, match=r"report report.json: artifacts\[1\].target must be a string .*, got 5;"):
        Report.from_dict(report, "report.json")
    with pytest.raises(BadInput, match="report.json: 'host' must be an object"):
        Report.from_dict({**full_report(), "host": []}, "report.json")


# ------------------------------------------------------------------ frozen, stdlib only
def test_every_record_is_frozen():
    from test_untrusted_reports import full_report

    records = [
        Verification(1, 1.0, 1.0, 0.0, 0.0, 0.9, "x", 0.9),
        TensorSpec("in", "float32", (1, 3)),
        BudgetAttempt((), 0.0, 0.0),
        BudgetRecord.from_dict(copy.deepcopy(BUDGET), "m.json"),
        ReportRow(name="x"),
        Report.from_dict(full_report(), "report.json"),
    ]
    for record in records:
        first = dataclasses.fields(record)[0].name
        before = getattr(record, first)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, first, "changed")
        assert getattr(record, first) == before


def test_manifest_is_frozen(converted_all):
    m = read_manifest(converted_all[0] / "litert-fp32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.target = "other"
    assert m.target == "litert-fp32"


def test_records_import_no_runtime_or_numpy():
    code = (
        "import sys, xception_edge.records; "
        "print(' '.join(m for m in ('numpy', 'PIL', 'tensorflow', 'keras', 'openvino', 'onnxruntime') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""
