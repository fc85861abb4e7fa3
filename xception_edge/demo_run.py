"""`xception-edge demo`: build or reuse the demo, convert it to every built-in target, evaluate
every artifact against the Keras model on the held-out demo splits (val, val_hard), and inspect
the int8 artifacts layer by layer."""

from __future__ import annotations

import json
from pathlib import Path

from . import console
from .errors import BadInput


def demo_calibration_list() -> Path:
    """calibration/demo.txt: in the installed package, or at the repo root in a checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_calibration" / "demo.txt", here.parent / "calibration" / "demo.txt"):
        if cand.is_file():
            return cand
    raise BadInput(f"the demo calibration list calibration/demo.txt is missing beside {here}; reinstall xception-edge")


def run_demo(out: Path, cache: Path | None, json_out: str | None, *, tiny: bool = False, report: Path | None = None) -> None:
    from .demo import DEMO, TINY, ensure_demo

    demo = ensure_demo(cache, config=TINY if tiny else DEMO)
    stats = demo.stats
    console.info(
        f"demo model {demo.model} ({stats.get('params', '?')} parameters): Keras top-1 "
        f"{stats.get('val_top1', float('nan')):.1%} on val, {stats.get('val_hard_top1', float('nan')):.1%} on val_hard"
    )
    labels_file = demo.model.with_name("labels.txt")
    if not labels_file.is_file():
        labels_file.write_text("\n".join(demo.labels) + "\n", encoding="utf-8")
    # The committed list (calibration/demo.txt) names images of the full demo's train split;
    # the tiny test variant has fewer, so it samples its train folder instead.
    calibration = demo.data / "train" if tiny else demo_calibration_list()
    show = json_out != "-"
    results = _convert(demo, Path(out), calibration, labels_file, show)
    report = Path(report) if report is not None else Path(out).with_name(Path(out).name + "-report")
    evaluations = _evaluate_splits(demo, Path(out), report, tiny, show)
    inspection = _inspect(demo, Path(out), calibration, report, tiny, show)
    if json_out:
        import dataclasses

        payload = {
            "demo": {"model": str(demo.model), "stats": stats},
            "conversions": [dataclasses.asdict(r) for r in results],
            "evaluations": {split: r.to_dict() for split, r in evaluations.items()},
            "inspection": inspection,
        }
        _write_json(payload, json_out)
    if show:
        console.info(
            f"artifacts in {Path(out).resolve()}; reports in {report.resolve()}/{{val,val_hard}}/report.html "
            f"and {report.resolve()}/inspect/inspect.html"
        )
    failed = [r.target for r in results if not r.ok]
    if failed:
        import click

        raise click.exceptions.Exit(1)


def _convert(demo, out: Path, calibration: Path, labels_file: Path, show: bool) -> list:
    """Every built-in target, from the demo model."""
    from .pipeline import ConvertRequest, run_convert
    from .tables import conversion_table

    req = ConvertRequest(
        model=str(demo.model),
        targets=("all",),
        out=out,
        calibration=calibration,
        calibration_root=demo.data / "train",
        verify_data=demo.data / "val",
        labels=labels_file,
        force=True,
    )
    results = run_convert(req)
    if show:
        conversion_table(results)
    return results


def _evaluate_splits(demo, out: Path, report: Path, tiny: bool, show: bool) -> dict:
    """Evaluate on both held-out splits: each costs seconds (images are small, decoded once), and
    val_hard (thin margins) is where the int8 targets part from fp32 while val barely moves."""
    from .evaluation import EvaluateRequest, run_evaluate
    from .report import print_report

    evaluations = {}
    for split in ("val", "val_hard"):
        evaluations[split] = run_evaluate(
            EvaluateRequest(
                model=str(demo.model),
                artifacts=out,
                data=demo.data / split,
                report=report / split,
                runs=5 if tiny else 50,
                warmup=1 if tiny else 5,
            )
        )
        if show:
            print_report(evaluations[split])
    return evaluations


def _inspect(demo, out: Path, calibration: Path, report: Path, tiny: bool, show: bool):
    """Which layers each int8 backend quantizes worst, measured with the backend's own tool."""
    from .inspection.report import print_inspect, write_inspect
    from .inspection.run import InspectRequest, run_inspect

    inspection = run_inspect(
        InspectRequest(
            artifacts=out,
            model=str(demo.model),
            calibration=calibration,
            calibration_root=demo.data / "train",
            num_images=8 if tiny else 32,
        )
    )
    write_inspect(inspection, report / "inspect", top=10)
    if show:
        print_inspect(inspection, top=5)
    return inspection


def _write_json(payload: dict, json_out: str) -> None:
    text = json.dumps(payload, indent=2, default=str)
    if json_out == "-":
        print(text)
    else:
        Path(json_out).write_text(text + "\n", encoding="utf-8")
