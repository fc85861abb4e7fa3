"""How far a top-1 drop can be trusted: the paired-bootstrap interval and McNemar's exact test
(xception_edge/stats.py), their fields in evaluate's report rows, their columns in report.md,
and the gate `max_top1_drop_pp_upper` on the interval's worst end."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner

from xception_edge import stats
from xception_edge.accuracy import accuracy_report, paired_drop
from xception_edge.cli import cli
from xception_edge.records import ReportRow
from xception_edge.records.base import RecordError
from xception_edge.stats import drop_ci_from_counts, mcnemar_exact, paired_bootstrap_drop_ci


# ------------------------------------------------------------------ McNemar
@pytest.mark.parametrize(
    "b,c,p",
    [
        (0, 6, 0.03125),  # 2 · C(6,0) / 2^6 = 2/64
        (6, 0, 0.03125),
        (1, 5, 0.21875),  # 2 · (1 + 6) / 64 = 14/64
        (0, 1, 1.0),  # 2 · 1/2
        (3, 3, 1.0),
        (0, 0, 1.0),
        (2, 10, 2 * (1 + 12 + 66) / 4096),
    ],
)
def test_mcnemar_exact_by_hand(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-15, abs=0)


def test_mcnemar_large_counts_do_not_overflow_and_match_the_exact_sum():
    for n, k in [(3000, 1400), (4000, 1950), (5000, 2400)]:
        assert stats._log_tail(n, k) == pytest.approx(stats._exact_tail(n, k), rel=1e-9)
    p = mcnemar_exact(24_900, 25_100)  # 50,000 discordant images: the log-space path
    assert 0 < p < 1 and p == pytest.approx(mcnemar_exact(25_100, 24_900))
    assert mcnemar_exact(20_000, 30_000) == 0.0  # below the smallest float: reads 0, never NaN or an error


def test_mcnemar_matches_scipy_binomial_test_when_scipy_is_there():
    binomtest = pytest.importorskip("scipy.stats").binomtest
    for b, c in [(0, 6), (1, 5), (7, 19), (120, 160), (480, 520), (2600, 2800)]:
        assert mcnemar_exact(b, c) == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)


@pytest.mark.parametrize("b,c", [(-1, 3), (True, 2), (1.5, 2)])
def test_mcnemar_refuses_what_is_not_a_count(b, c):
    with pytest.raises(ValueError):
        mcnemar_exact(b, c)


# ------------------------------------------------------------------ paired bootstrap
def _lost(n: int, lost: int, gained: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of artifact and reference: the reference right on every image, the artifact
    wrong on the first ``lost``; then ``gained`` images only the artifact gets right."""
    ref = np.ones(n, bool)
    art = ref.copy()
    art[:lost] = False
    ref[lost : lost + gained] = False
    return art, ref


def test_bootstrap_of_identical_models_is_zero():
    a = np.random.default_rng(1).random(500) < 0.8
    assert paired_bootstrap_drop_ci(a, a) == (0.0, 0.0)


def test_bootstrap_30_of_1000_lost():
    # d = -1 on 30 images, 0 elsewhere: the drop is -3.0 pp, its standard error 100·sqrt(.03·.97/1000) ≈ 0.54 pp
    low, high = paired_bootstrap_drop_ci(*_lost(1000, 30))
    assert -4.2 <= low < -3.0 < high <= -1.8
    assert low == pytest.approx(-3.0 - 1.96 * 0.54, abs=0.2) and high == pytest.approx(-3.0 + 1.96 * 0.54, abs=0.2)


def test_bootstrap_is_deterministic_for_a_seed():
    art, ref = _lost(800, 12, 7)
    first = paired_bootstrap_drop_ci(art, ref, seed=3)
    assert paired_bootstrap_drop_ci(art, ref, seed=3) == first
    assert drop_ci_from_counts(800, 12, 7, seed=3) == first
    assert paired_bootstrap_drop_ci(art, ref, seed=4) != first


def test_multinomial_counts_give_the_index_bootstrap():
    """Drawing the counts of d = -1/0/+1 is the same distribution as resampling image indices."""
    art, ref = _lost(500, 20, 8)
    d = art.astype(int) - ref.astype(int)
    idx = np.random.default_rng(7).integers(0, d.size, size=(10_000, d.size))
    naive = np.quantile(100 * d[idx].mean(axis=1), [0.025, 0.975])
    fast = paired_bootstrap_drop_ci(art, ref)
    assert fast == pytest.approx(tuple(naive), abs=0.25)
    assert fast[0] < 100 * d.mean() < fast[1]


def test_bootstrap_level_and_size_independence():
    low90, high90 = paired_bootstrap_drop_ci(*_lost(1000, 30), level=0.90)
    low95, high95 = paired_bootstrap_drop_ci(*_lost(1000, 30))
    assert low95 <= low90 < high90 <= high95
    low, high = drop_ci_from_counts(10_000_000, 300_000, 0)  # O(resamples), whatever the images
    assert low < -3.0 < high and high - low < 0.05
    with pytest.raises(ValueError):
        paired_bootstrap_drop_ci(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError):
        drop_ci_from_counts(10, 6, 6)


# ------------------------------------------------------------------ per image, as evaluate scores
def test_paired_drop_counts_undecodable_images_as_misses_like_top1():
    """drop_pp from accuracy_report's top-1 equals 100 · (gained − lost) / images, with undecodable
    images in the denominator (a miss for both models)."""
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    n, bad = 200, 5
    y = rng.integers(0, 3, n + bad)
    keys = [f"img{i}" for i in range(n + bad)]
    ref_probs = rng.random((n, 3)) + 0.8 * np.eye(3)[y[:n]]  # mostly right
    art_probs = ref_probs + 0.8 * rng.random((n, 3))  # some flips, both ways
    label_of = {k: labels[t] for k, t in zip(keys, y)}
    accs, preds = [], []
    for probs in (art_probs, ref_probs):
        accs.append(accuracy_report(probs, y[:n], labels, undecodable_labels=list(y[n:])))
        preds.append({k: labels[int(c)] for k, c in zip(keys, probs.argmax(-1))})  # the undecodable: absent
    out = paired_drop(preds[0], preds[1], label_of)
    drop_pp = 100 * (accs[0]["top1"] - accs[1]["top1"])
    assert out["lost"] > 0 and out["gained"] > 0
    assert drop_pp == pytest.approx(100 * (out["gained"] - out["lost"]) / accs[0]["images"], abs=1e-9)
    assert out["drop_ci_pp"][0] <= drop_pp <= out["drop_ci_pp"][1]
    assert out["mcnemar_p"] == mcnemar_exact(out["lost"], out["gained"])


# ------------------------------------------------------------------ report rows
def test_a_row_without_the_new_fields_still_reads_and_writes_without_them():
    row = {"name": "x", "backend": "litert", "precision": "int8", "images": 10, "top1": 0.9, "top5": 1.0}
    row |= {"drop_pp": -1.0, "top5_drop_pp": 0.0, "ratio": 0.99, "meets_mlperf_99": True, "agreement": 0.9}
    row |= {"flipped": 1, "flips_per_class": {}, "per_class": {}, "size_bytes": 1, "cpu_warning": None}
    row |= {"latency": {"p50_ms": 1.0, "p90_ms": 1.0, "samples_ms": [1.0]}}
    old = ReportRow.from_dict(row, "cached.json", artifact=False)
    assert old.drop_ci_pp is None and "drop_ci_pp" not in old.to_dict() and "mcnemar_p" not in old.to_dict()
    new = ReportRow.from_dict({**row, "drop_ci_pp": [-2.0, 0.5], "mcnemar_p": 0.4, "lost": 3, "gained": 2}, "c", artifact=False)
    assert new.to_dict()["drop_ci_pp"] == [-2.0, 0.5] and new.lost == 3
    for bad in ([1.0], [0.5, -2.0], [0, "x"], "[-1, 1]"):
        with pytest.raises(RecordError, match="drop_ci_pp"):
            ReportRow.from_dict({**row, "drop_ci_pp": bad}, "cached.json", artifact=False)


@pytest.fixture(scope="module")
def ci_report(converted_all, tmp_path_factory):
    """evaluate on one artifact folder of the suite's shared conversion: (report folder, its dict)."""
    from xception_edge.api import evaluate

    out, _, (model, _, val) = converted_all
    folder = tmp_path_factory.mktemp("ci") / "r"
    rep = evaluate(model, out / "arm64-litert-int8", val, report=folder, runs=2, warmup=0)
    return folder, rep.to_dict()


def test_evaluate_rows_carry_the_interval_and_mcnemar(ci_report):
    folder, rep = ci_report
    (row,) = rep["artifacts"]
    low, high = row["drop_ci_pp"]
    assert low <= row["drop_pp"] <= high
    assert row["drop_pp"] == pytest.approx(100 * (row["gained"] - row["lost"]) / row["images"], abs=1e-9)
    assert row["lost"] + row["gained"] <= row["flipped"]  # a lost or gained image is a flip
    assert 0 < row["mcnemar_p"] <= 1 and row["mcnemar_p"] == mcnemar_exact(row["lost"], row["gained"])
    assert (low, high) == drop_ci_from_counts(row["images"], row["lost"], row["gained"])  # seed 0: reproducible
    assert "drop_ci_pp" not in rep["reference"] and "mcnemar_p" not in rep["reference"]
    assert rep["settings"]["drop_ci"] == {"method": "paired bootstrap, percentile", "level": 0.95, "resamples": 10_000, "seed": 0}
    md = (folder / "report.md").read_text()
    assert f"| {row['drop_pp']:+.2f} [{low:+.2f}, {high:+.2f}] |" in md
    assert "p (McNemar)" in md and "not distinguishable from noise" in md
    html = (folder / "report.html").read_text()
    assert f"{row['drop_pp']:+.2f} [{low:+.2f}, {high:+.2f}]" in html and "p (McNemar)" in html


# ------------------------------------------------------------------ the gate
_LENIENT = "max_top1_drop_pp = 100\nmin_top1_ratio = 0\nmin_agreement = 0\n"  # only the interval decides


def _gate(tmp_path, report: dict, limits: str) -> tuple[int, dict]:
    path, toml, out = tmp_path / "report.json", tmp_path / "gates.toml", tmp_path / "gates.json"
    path.write_text(json.dumps(report))
    toml.write_text(f"[arm64-litert-int8]\n{limits}")
    r = CliRunner().invoke(cli, ["gate", str(path), "--gates", str(toml), "--json", str(out)])
    if r.exit_code == 2:
        return 2, {"output": r.output}
    results = json.loads(out.read_text())["results"]
    return r.exit_code, {x["gate"]: x for x in results}


def test_gate_on_the_intervals_upper_bound(ci_report, tmp_path):
    rep = copy.deepcopy(ci_report[1])
    row = rep["artifacts"][0]
    row["drop_ci_pp"] = [-0.8, 0.2]  # the worst plausible drop: 0.8 pp
    code, res = _gate(tmp_path, rep, _LENIENT + "max_top1_drop_pp_upper = 1.0\n")
    assert code == 0 and res["max_top1_drop_pp_upper"]["passed"] and res["max_top1_drop_pp_upper"]["value"] == 0.8
    code, res = _gate(tmp_path, rep, _LENIENT + "max_top1_drop_pp_upper = 0.5\n")
    assert code == 1 and not res["max_top1_drop_pp_upper"]["passed"] and res["max_top1_drop_pp_upper"]["limit"] == 0.5
    assert "95% CI [-0.80, +0.20]" in res["max_top1_drop_pp_upper"]["note"]  # the gate shows the interval
    assert "95% CI [-0.80, +0.20]" in res["max_top1_drop_pp"]["note"] and "McNemar p = " in res["max_top1_drop_pp"]["note"]
    row["drop_ci_pp"] = [0.1, 0.6]  # better than Keras even at worst
    code, res = _gate(tmp_path, rep, _LENIENT + "max_top1_drop_pp_upper = 0\n")
    assert code == 0 and res["max_top1_drop_pp_upper"]["value"] == -0.1


@pytest.mark.parametrize("ci", ["absent", None, [0.5, -0.5], [-1.0], ["-1", 0], [float("nan"), 0.0]])
def test_gate_on_the_upper_bound_fails_without_a_measured_interval(ci_report, tmp_path, ci):
    rep = copy.deepcopy(ci_report[1])
    row = rep["artifacts"][0]
    row.pop("drop_ci_pp")
    if ci != "absent":
        row["drop_ci_pp"] = ci
    code, res = _gate(tmp_path, rep, _LENIENT + "max_top1_drop_pp_upper = 100\n")
    gate = res["max_top1_drop_pp_upper"]
    assert code == 1 and not gate["passed"] and gate["value"] is None and "drop_ci_pp" in gate["note"]
    assert res["max_top1_drop_pp"]["passed"]  # the point estimate's gate does not need the interval


def test_the_upper_bound_limit_is_checked_like_the_others(ci_report, tmp_path):
    rep = copy.deepcopy(ci_report[1])
    code, res = _gate(tmp_path, rep, "max_top1_drop_pp_upper = -1\n")
    assert code == 2 and "max_top1_drop_pp_upper = -1 must be a finite, non-negative number" in res["output"]
    code, res = _gate(tmp_path, rep, 'max_top1_drop_pp_upper = "1"\n')
    assert code == 2 and "max_top1_drop_pp_upper" in res["output"]


def test_the_examples_in_the_schema_docs():
    """docs/report-schema.md, "How far a drop can be trusted": noise on 1,000 images, a real drop on 50,000."""
    assert drop_ci_from_counts(1000, 10, 7) == pytest.approx((-1.1, 0.5)) and mcnemar_exact(10, 7) == pytest.approx(
        0.629, abs=1e-3
    )
    assert drop_ci_from_counts(50_000, 300, 150) == pytest.approx((-0.38, -0.22), abs=0.005) and mcnemar_exact(300, 150) < 1e-5
