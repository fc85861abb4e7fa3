"""`evaluate --device`: every artifact also runs on the device (here the emulated arm64 device,
real aarch64 runtimes under QEMU) on the same images; its rows land in the same report, next to
the host's, and behind the same gates (plus `min_device_agreement`); the latency of a device is
measured in rounds with a confidence interval on p50."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xception_edge.cli import cli
from xception_edge.latency import median_ci, split_runs

TARGETS = ("arm64-litert-int8", "arm64-onnxruntime-int8")
DEVICE = "emulated:arm64:cortex-a76"


def _invoke(args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def device_report(converted_all, emulated_arm64, tmp_path_factory):
    """The two arm64 artifacts and an x86 one (an artifact for another architecture: a warning)
    evaluated here and on the emulated arm64 device."""
    out, _, (model, _, val) = converted_all
    root = tmp_path_factory.mktemp("device-eval")
    for name in (*TARGETS, "x86-onnxruntime-int8"):
        shutil.copytree(out / name, root / "artifacts" / name)
    args = ["evaluate", "--model", model, "--artifacts", root / "artifacts", "--data", val, "--report", root / "report"]
    r = _invoke([*args, "--device", "emulated:arm64", "--runs", 6, "--warmup", 1])
    assert r.exit_code == 0, r.output
    return root, args, json.loads((root / "report" / "report.json").read_text()), r.output


def test_device_rows_sit_next_to_host_rows(device_report):
    _, _, report, output = device_report
    hosts = {r["name"]: r for r in report["artifacts"]}
    devices = {r["name"]: r for r in report["devices"]}
    assert set(devices) == set(hosts) == {*TARGETS, "x86-onnxruntime-int8"}
    for name, row in devices.items():
        assert row["device"]["spec"] == DEVICE and row["device"]["emulated"] is True
        assert row["device_host"]["machine"] == "aarch64" and row["device_host"]["cpu_core"] == "Cortex-A76"
        assert row["latency_emulated"] is True and row["images"] == hosts[name]["images"] == 30
        p = row["parity"]
        # same images, same artifact: the arm64 kernels agree with this host's on every image here
        assert p["images"] == 30 and p["top1_agreement"] == 1.0 and p["passed"], (name, p)
        assert abs(row["top1"] - hosts[name]["top1"]) <= 1 / 30  # at most one image apart
        lat = row["latency"]
        assert lat["runs"] == 6 and lat["rounds"] == 3 and len(lat["round_p50_ms"]) == 3
        lo, hi = lat["p50_ci_ms"]
        assert lo <= lat["p50_ms"] <= hi
    assert devices["arm64-litert-int8"]["cpu_warning"] is None
    assert "made for x86 CPUs but this is aarch64" in devices["x86-onnxruntime-int8"]["cpu_warning"]
    assert "made for x86 CPUs but this is aarch64" in output  # a warning, not an error


def test_report_md_and_html_show_the_device_table(device_report):
    root, _, _, _ = device_report
    md = (root / "report" / "report.md").read_text()
    section = md.split("## On the device", 1)[1].split("##", 1)[0]
    assert section.count(f"| {DEVICE} |") == 3 and "(emulated)" in section and "never gated" in section
    html = (root / "report" / "report.html").read_text()
    assert "<h2>On the device</h2>" in html and html.count(DEVICE) >= 3


def _gate(report: dict, tmp_path: Path, gates: str | None = None) -> tuple[int, list[dict]]:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    extra = []
    if gates is not None:
        (tmp_path / "gates.toml").write_text(gates)
        extra = ["--gates", tmp_path / "gates.toml"]
    r = _invoke(["gate", path, *extra, "--json", tmp_path / "gates.json"])
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, json.loads((tmp_path / "gates.json").read_text())["results"]


def test_gates_apply_to_device_rows(device_report, tmp_path):
    _, _, report, _ = device_report
    gates = "\n".join(
        f'[{t}]\nmax_top1_drop_pp = 100\nmax_p50_latency_ms = 0.001\nlatency_host = "cortex-a76"\n' for t in TARGETS
    )
    gates += "[x86-onnxruntime-int8]\nmax_top1_drop_pp = 100\n"
    code, results = _gate(report, tmp_path, gates)
    assert code == 0, results
    by = {(r["name"], r["gate"]): r for r in results}
    name = f"arm64-litert-int8@{DEVICE}"
    agreement = by[(name, "min_device_agreement")]
    assert agreement["passed"] and agreement["value"] == 1.0 and agreement["limit"] == 0.99
    # latency_host names the emulated device's core: emulated latency is never gated
    assert by[(name, "max_p50_latency_ms")]["note"].startswith("skipped: latency on emulated:arm64")
    assert ("arm64-litert-int8", "min_device_agreement") not in by  # host rows have no device parity


def test_device_agreement_below_the_limit_fails_the_gate(device_report, tmp_path):
    _, _, report, _ = device_report
    bad = json.loads(json.dumps(report))
    bad["devices"][0]["parity"]["top1_agreement"] = 0.95
    del bad["devices"][1]["parity"]  # no measured parity: never a pass
    code, results = _gate(bad, tmp_path)
    failed = {(r["name"], r["gate"]): r for r in results if not r["passed"]}
    first, second = (f"{row['name']}@{DEVICE}" for row in bad["devices"][:2])
    assert code == 1 and failed[(first, "min_device_agreement")]["value"] == 0.95
    assert failed[(second, "min_device_agreement")]["value"] is None
    code, results = _gate(bad, tmp_path, f'["{first}"]\nmin_device_agreement = 0.9\n["{second}"]\nungated = true\n')
    assert code == 0, [r for r in results if not r["passed"]]


def test_resume_reuses_device_rows(device_report, monkeypatch):
    """A second run with --resume reuses every row, the device's too: the device is not opened."""
    root, args, report, _ = device_report

    def no_device(*a, **k):
        raise AssertionError("the device was opened again")

    monkeypatch.setattr("xception_edge.devices.remote.open_device", no_device)
    r = _invoke([*args, "--device", "emulated:arm64", "--runs", 6, "--warmup", 1, "--resume"])
    assert r.exit_code == 0, r.output
    again = json.loads((root / "report" / "report.json").read_text())
    assert [d["reused"] for d in again["devices"]] == [True] * 3
    strip = ("reused", "seconds")
    assert [{k: v for k, v in d.items() if k not in strip} for d in again["devices"]] == [
        {k: v for k, v in d.items() if k not in strip} for d in report["devices"]
    ]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--rounds", "0"], "--rounds 0"),
        (["--rounds", "9", "--runs", "3"], "--rounds 9 is more than --runs 3"),
        (["--cooldown", "-1"], "--cooldown -1"),
        (["--keep"], "--keep"),
    ],
)
def test_bad_device_timing_is_exit_2(converted_all, tmp_path, extra, words):
    out, _, (model, _, val) = converted_all
    device = [] if extra == ["--keep"] else ["--device", "emulated:arm64"]
    r = _invoke(["evaluate", "--model", model, "--artifacts", out, "--data", val, "--report", tmp_path / "r", *device, *extra])
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "r").exists()


def test_median_confidence_interval_is_the_order_statistics():
    # n = 10 at 95%: the 2nd and 9th smallest (a binomial table's values); n = 100: the 40th and 61st
    assert median_ci(np.arange(10.0)) == (1.0, 8.0)
    assert median_ci(np.arange(100.0)[::-1]) == (39.0, 60.0)
    assert median_ci(np.arange(5.0)) is None  # too few runs for a 95% interval
    assert split_runs(10, 3) == [4, 3, 3]
