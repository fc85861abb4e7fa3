"""The public Python API: typed results, the toolkit's exceptions, no sys.exit, no framework on import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import xception_edge as xe


def test_import_loads_no_framework():
    code = (
        "import sys, xception_edge as xe; xe.convert; xe.BadInput; "
        "print(' '.join(m for m in ('tensorflow','keras','openvino','onnxruntime','nncf','tf2onnx') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""


def test_convert_bench_evaluate_gate_from_python(small_model, converted_all, tmp_path):
    model, train, val = small_model
    results = xe.convert(model, "litert-fp32", calibration=train, verify_data=val, out=tmp_path / "out")
    assert [(r.target, r.ok) for r in results] == [("litert-fp32", True)]
    assert results[0].verification["agreement"] == 1.0
    stats = xe.bench(tmp_path / "out" / "litert-fp32", runs=3, warmup=1)
    assert stats["artifact"]["target"] == "litert-fp32" and stats["latency"]["runs"] == 3
    out, _, _ = converted_all
    report = xe.evaluate(model, out, val, report=tmp_path / "report", runs=2, warmup=0)
    assert {r.name for r in report.artifacts} >= {"litert-fp32", "arm64-litert-int8"}
    assert report.to_dict() == json.loads((tmp_path / "report" / "report.json").read_text())  # the typed report is the file
    assert (tmp_path / "report" / "report.json").is_file()
    checks = xe.gate(report)
    assert checks and all(hasattr(c, "passed") for c in checks)
    assert xe.gate(tmp_path / "report" / "report.json") == checks


def test_errors_raise_the_toolkits_exceptions_not_system_exit(tmp_path):
    with pytest.raises(xe.BadInput, match="unknown target 'nope'"):
        xe.convert("keras:xception", ["nope"], out=tmp_path / "o")
    with pytest.raises(xe.BadInput, match="add --data"):
        xe.bench(tmp_path, reference=tmp_path / "ref.json")
    with pytest.raises(xe.BadInput, match="not an xception-edge report"):
        xe.gate({"schema": "other"})
    assert not (tmp_path / "o").exists()
