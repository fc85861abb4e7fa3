"""The public Python API, the one the command line is a thin layer over:

    import xception_edge as xe

    results = xe.convert("model.keras", targets=["arm64-litert-int8"], calibration="calib/", out="artifacts/")
    report = xe.evaluate("model.keras", artifacts="artifacts/", data="val/")
    stats = xe.bench("artifacts/arm64-litert-int8", runs=50)

Bad input raises ``xception_edge.BadInput`` (the CLI's exit 2); a failed run raises
``ConversionFailed``/``VerificationFailed`` or reports the failure in its result (a target that
failed has ``ok == False``). Nothing here calls ``sys.exit``, prints a traceback or installs a
signal handler. Every heavy framework is imported inside the call that needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import BadInput
from .records import Report


def convert(
    model: str | Path,
    targets: str | Sequence[str | Path],
    *,
    calibration: str | Path | None = None,
    out: str | Path = "artifacts",
    calibration_root: str | Path | None = None,
    num_calibration: int | None = None,
    seed: int = 0,
    verify: bool = True,
    verify_data: str | Path | None = None,
    labels: str | Path | None = None,
    force: bool = False,
    unsafe_model: bool = False,
    weights: str = "imagenet",
    input_size: int = 299,
    num_classes: int = 1000,
    resize: str = "resize",
    crop_fraction: float = 0.875,
    interpolation: str = "bilinear",
    max_drop: float | None = None,
    validation: str | Path | None = None,
    strict: bool = False,
    transforms: Sequence[str] | None = None,
) -> list:
    """Convert ``model`` to every target (built-in names, ``"all"``, or .toml paths), verify each
    artifact and write ``out/<target>/``. Returns one ``TargetResult`` per target. ``transforms``
    (e.g. ``["cle"]``; ``[]`` for none) replaces the quantized targets' ``[quantization] transforms``."""
    from .model_io import KerasXceptionOptions
    from .pipeline import ConvertRequest, run_convert

    names = (targets,) if isinstance(targets, (str, Path)) else tuple(targets)
    req = ConvertRequest(
        model=str(model),
        targets=tuple(str(t) for t in names),
        out=Path(out),
        calibration=_path(calibration),
        calibration_root=_path(calibration_root),
        num_calibration=num_calibration,
        seed=seed,
        verify=verify,
        verify_data=_path(verify_data),
        labels=_path(labels),
        force=force,
        unsafe_model=unsafe_model,
        xception=KerasXceptionOptions(weights=weights, input_size=input_size, num_classes=num_classes),
        resize=resize,
        crop_fraction=crop_fraction,
        interpolation=interpolation,
        max_drop=max_drop,
        validation=_path(validation),
        strict=strict,
        transforms=None
        if transforms is None
        else tuple(str(t) for t in ([transforms] if isinstance(transforms, str) else transforms)),
    )
    return run_convert(req)


def evaluate(
    model: str | Path,
    artifacts: str | Path,
    data: str | Path,
    *,
    report: str | Path = "report",
    resume: bool = False,
    runs: int = 50,
    warmup: int = 5,
    decode_threads: int = 2,
    unsafe_model: bool = False,
    device: str = "local",
    device_python: str | None = None,
    keep: bool = False,
    rounds: int | None = None,
    cooldown: float | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    ship_data: bool = False,
    shard_size: int | None = None,
) -> Report:
    """Keras fp32 and every artifact of ``artifacts`` on the labelled images of ``data``; writes
    ``report/report.{json,md,html}`` and returns the report as a typed ``Report``: its
    ``reference`` and ``artifacts`` are ``ReportRow``s (``report.to_dict()`` is report.json's
    content; schema: docs/report-schema.md). With ``device`` (as in ``bench``) every artifact
    also runs there on the same images: ``report.devices`` holds those rows, each with its
    device, latency and parity with this host's outputs. With ``executor="ray"`` the accuracy
    passes run as Ray tasks over shards of ``shard_size`` images (default 256) on the cluster at
    ``ray_address`` (None: a local Ray), reading the files where every node sees them or, with
    ``ship_data``, sending them through Ray's object store; latency is still timed here, and a
    ``device`` still gets every artifact from here, with the same device rows as a local run."""
    from .evaluation import EvaluateRequest, run_evaluate

    req = EvaluateRequest(
        model=str(model),
        artifacts=Path(artifacts),
        data=Path(data),
        report=Path(report),
        resume=resume,
        runs=runs,
        warmup=warmup,
        decode_threads=decode_threads,
        unsafe_model=unsafe_model,
        device=_device_run(device, device_python, keep, runs=runs, warmup=warmup, rounds=rounds, cooldown=cooldown),
        executor=executor,
        ray_address=ray_address,
        ship_data=ship_data,
        shard_size=shard_size,
    )
    return run_evaluate(req)


def _device_run(device, python, keep, *, runs, warmup, rounds, cooldown):
    """``evaluate``'s device, or None for this host alone."""
    from .devices.spec import parse

    spec = parse(device)
    if spec.kind == "local" and python is None:
        if keep or rounds is not None or cooldown is not None:
            raise BadInput("--keep, --rounds and --cooldown are for a device run: add --device ssh://… or emulated:arm64")
        return None
    from .devices.evaluate import DeviceRun

    timing = device_timing(spec, runs=runs, warmup=warmup, threads=None, rounds=rounds, cooldown=cooldown)
    return DeviceRun(spec, timing, python=python, keep=keep)


def bench(
    artifact: str | Path,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    data: str | Path | None = None,
    reference: str | Path | None = None,
    device: str = "local",
    device_python: str | None = None,
    keep: bool = False,
    rounds: int | None = None,
    cooldown: float | None = None,
) -> dict:
    """Latency (and accuracy with ``data``) of one artifact folder with its own runtime, here or
    on ``device`` (``"ssh://[user@]host[:port]"``, ``"emulated:arm64[:CPU]"``; ``"local"`` with
    ``device_python`` runs it in that interpreter). A device run also measures parity: the device's
    outputs against this host's on the same inputs (``result["parity"]``). The timed runs are dealt
    into ``rounds`` rounds with ``cooldown`` seconds of rest before each (defaults: one round here,
    3 on a device; a 2 s cooldown on an ssh device, none elsewhere); the latency record gives a 95%
    confidence interval of p50 (``p50_ci_ms``)."""
    from .benchmark import run_bench
    from .devices.spec import parse

    if threads is not None and threads < 1:
        raise BadInput(f"--threads {threads} must be at least 1")
    if reference is not None and data is None:
        raise BadInput(
            f"--reference {reference} compares predictions on images: add --data DIR (the images the "
            "reference was made on), or drop --reference"
        )
    spec = parse(device)
    if spec.kind == "local" and device_python is None:
        if keep:
            raise BadInput("--keep keeps a device's temporary folder: add --device ssh://… or emulated:arm64, or --device-python")
        return run_bench(
            Path(artifact), runs=runs, warmup=warmup, threads=threads, data=_path(data), reference=_path(reference),
            rounds=1 if rounds is None else rounds, cooldown=cooldown or 0.0,
        )  # fmt: skip
    from .devices.bench import bench_on_device

    timing = device_timing(spec, runs=runs, warmup=warmup, threads=threads, rounds=rounds, cooldown=cooldown)
    return bench_on_device(
        Path(artifact), spec, timing, data=_path(data), reference=_path(reference), device_python=device_python, keep=keep
    )


def device_timing(spec, *, runs: int, warmup: int, threads: int | None, rounds: int | None, cooldown: float | None):
    """The timing of a device run, with the defaults filled in: 3 rounds; 2 s of cooldown on an
    ssh device (a real CPU that heats), none on a local or emulated one."""
    from .devices.remote import Timing

    rounds = max(min(3, runs), 1) if rounds is None else rounds
    if cooldown is None:
        cooldown = 2.0 if spec.kind == "ssh" else 0.0
    return Timing(runs=runs, warmup=warmup, rounds=rounds, cooldown=cooldown, threads=threads).check()


def inspect(
    artifacts: str | Path,
    model: str | Path,
    calibration: str | Path,
    *,
    calibration_root: str | Path | None = None,
    num_images: int = 32,
    top: int = 10,
    report: str | Path = "inspect-report",
    unsafe_model: bool = False,
) -> dict:
    """Per-layer quantization error of each int8 artifact; writes ``report/inspect.{json,md,html}``."""
    from .artifact import output_lock
    from .inspection.report import write_inspect
    from .inspection.run import InspectRequest, run_inspect

    if top < 1:
        raise BadInput(f"--top {top} must be at least 1")
    req = InspectRequest(
        artifacts=Path(artifacts),
        model=str(model),
        calibration=Path(calibration),
        calibration_root=_path(calibration_root),
        num_images=num_images,
        unsafe_model=unsafe_model,
    )
    with output_lock(Path(report), "--report"):
        result = run_inspect(req)
        files = write_inspect(result, Path(report), top)
    result["files"] = {k: str(v) for k, v in files.items()}
    return result


def gate(report: str | Path | Report | dict, *, gates: str | Path | None = None) -> list:
    """Check an evaluate report (its report.json, the ``Report`` ``evaluate`` returned, or a dict
    of report.json's content) against each artifact's gates; one ``GateResult`` per check.
    Passed when ``all(r.passed for r in results)``."""
    from .gates import check_report, evaluate_gates, load_gates_file, load_report

    if isinstance(report, Report):
        data = report
    elif isinstance(report, dict):
        data = check_report(report, "the report")
    else:
        data = load_report(Path(report))
    overrides = load_gates_file(Path(gates)) if gates is not None else {}
    return evaluate_gates(data, overrides)


def sweep(
    model: str | Path,
    target: str | Path,
    *,
    calibration: str | Path,
    validation: str | Path,
    grid,
    out: str | Path = "sweep",
    calibration_root: str | Path | None = None,
    labels: str | Path | None = None,
    unsafe_model: bool = False,
    resize: str = "resize",
    crop_fraction: float = 0.875,
    interpolation: str = "bilinear",
    executor: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
) -> dict:
    """Convert one int8 ``target`` over ``grid`` (a .toml/.json path, ``"KEY=V1,V2"`` strings, or a
    mapping such as ``{"size": [100, 300], "seed": [0, 1, 2]}``; axes size, seed, method,
    transforms), evaluate each cell on ``validation`` against the Keras model (computed once), here
    or as Ray tasks (``executor="ray"``), and write ``out/sweep.{json,md,html}`` and each cell's
    artifact under ``out/cells/``. Returns sweep.json's content; its ``recommendation`` holds the
    smallest calibration size whose spread over seeds is within noise, and how that was judged."""
    from .sweeps.run import SweepRequest, run_sweep

    req = SweepRequest(
        model=str(model), target=str(target), calibration=Path(calibration), validation=Path(validation), grid=grid,
        out=Path(out), calibration_root=_path(calibration_root), labels=_path(labels), unsafe_model=unsafe_model,
        resize=resize, crop_fraction=crop_fraction, interpolation=interpolation, executor=executor,
        ray_address=ray_address, resume=resume,
    )  # fmt: skip
    return run_sweep(req)


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)
