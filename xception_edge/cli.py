"""The `xception-edge` command line. Each command imports its implementation inside the function,
so `xception-edge --help` and the device path start without any heavy framework."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__, console, interrupts
from .errors import XceptionEdgeError


class _Group(click.Group):
    """Turns toolkit errors into one line on stderr and the error's exit code, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except XceptionEdgeError as exc:
            console.error(str(exc))
            raise click.exceptions.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.error("interrupted; nothing half-written was left behind")
            raise click.exceptions.Exit(interrupts.exit_code()) from None
        except OSError as exc:  # the machine failed the run (a full disk, a vanished folder): exit 1, one line
            where = f" ({exc.filename})" if exc.filename else ""
            console.error(f"{exc.strerror or exc}{where}; nothing half-written was left behind")
            raise click.exceptions.Exit(1) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="xception-edge")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's and the converters' own log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and results.")
def cli(verbose: bool, quiet: bool) -> None:
    """Convert a trained Keras Xception to int8 TFLite / OpenVINO / ONNX per target device,
    verify every artifact, and measure what quantization costs."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    console.configure(quiet=quiet)


def _emit_json(data, path: str | None) -> None:
    text = json.dumps(data, indent=2, default=str)
    if path in (None, "-"):
        click.echo(text)
    else:
        from .artifact import atomic_write_text

        atomic_write_text(Path(path), text + "\n")


# ---------------------------------------------------------------- convert
@cli.command()
@click.option(
    "--model",
    "model",
    required=True,
    metavar="M",
    help="A .keras or .h5 file, a SavedModel folder, or keras:xception (stock architecture).",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    metavar="T",
    help="Built-in target name, a path to a .toml profile, or 'all'. Repeatable.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    metavar="DIR|LIST",
    help="Calibration images: a folder (class sub-folders optional) or a list file of relative paths.",
)
@click.option(
    "--calibration-root",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Folder a list file's paths are relative to (default: the list file's folder).",
)
@click.option(
    "--num-calibration",
    type=int,
    default=None,
    metavar="N",
    help="Calibration images to sample (default: the target profile's calibration_size, 300).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the deterministic sampling.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("artifacts"),
    show_default=True,
    help="Output folder; each target is written to OUT/<target>/.",
)
@click.option("--force", is_flag=True, help="Overwrite existing artifacts.")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check each artifact against the source model before writing it.",
)
@click.option(
    "--verify-data",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Held-out images for verification (default: calibration images not used for calibration).",
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Class names, one per line (default: the calibration folder's class sub-folders, sorted).",
)
@click.option(
    "--unsafe-model", is_flag=True, help="Load .keras files with Keras safe mode off (Lambda layers). Trust the file first."
)
@click.option(
    "--weights",
    type=click.Choice(["imagenet", "none"]),
    default="imagenet",
    show_default=True,
    help="keras:xception only: ImageNet weights (needs the internet) or random.",
)
@click.option("--input-size", type=int, default=299, show_default=True, help="keras:xception only: input size (≥71).")
@click.option("--num-classes", type=int, default=1000, show_default=True, help="keras:xception only: classes.")
@click.option(
    "--resize",
    type=click.Choice(["resize", "crop"]),
    default="resize",
    show_default=True,
    help="Plain resize (as image_dataset_from_directory) or shorter side + centre crop (ImageNet style).",
)
@click.option("--crop-fraction", type=float, default=0.875, show_default=True, help="With --resize crop.")
@click.option("--interpolation", type=click.Choice(["bilinear", "bicubic"]), default="bilinear", show_default=True)
@click.option(
    "--max-drop",
    type=float,
    default=None,
    metavar="PP",
    help="Accuracy budget: top-1 drop (percentage points) on --validation that an int8 artifact may lose; "
    "over it, the most harmful layers are kept in float (up to the profile's max_float_mac_share).",
)
@click.option(
    "--validation",
    type=click.Path(path_type=Path),
    metavar="DIR|LIST",
    help="Labelled held-out images for --max-drop (class sub-folders, or a list file of 'path label').",
)
@click.option(
    "--strict", is_flag=True, help="Validation images that are also calibration images (same sha256) are an error, not a warning."
)
@click.option(
    "--json",
    "json_out",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[PATH]",
    help="Write machine-readable results to stdout (--json) or a file (--json=PATH).",
)
def convert(
    model,
    targets,
    calibration,
    calibration_root,
    num_calibration,
    seed,
    out,
    force,
    verify,
    verify_data,
    labels,
    unsafe_model,
    weights,
    input_size,
    num_classes,
    resize,
    crop_fraction,
    interpolation,
    max_drop,
    validation,
    strict,
    json_out,
):
    """Convert MODEL to every --target, verify each artifact, and write OUT/<target>/."""
    from . import api
    from .artifact import check_output_file

    check_output_file(json_out, "--json")
    results = api.convert(
        model,
        targets,
        calibration=calibration,
        out=out,
        calibration_root=calibration_root,
        num_calibration=num_calibration,
        seed=seed,
        verify=verify,
        verify_data=verify_data,
        labels=labels,
        force=force,
        unsafe_model=unsafe_model,
        weights=weights,
        input_size=input_size,
        num_classes=num_classes,
        resize=resize,
        crop_fraction=crop_fraction,
        interpolation=interpolation,
        max_drop=max_drop,
        validation=validation,
        strict=strict,
    )
    _report_conversions(results, json_out)
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)


def _report_conversions(results, json_out) -> None:
    from .tables import conversion_table

    if json_out:
        import dataclasses

        _emit_json({"results": [dataclasses.asdict(r) for r in results]}, json_out)
    if json_out != "-":
        conversion_table(results)


# ---------------------------------------------------------------- demo
@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-artifacts"), show_default=True)
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the demo data and model are cached (default: $XCEPTION_EDGE_CACHE or ~/.cache/xception-edge).",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Where the evaluation reports go: DIR/val/ and DIR/val_hard/ (default: OUT-report).",
)
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[PATH]")
@click.option("--tiny", is_flag=True, hidden=True, help="A small, quick demo variant (for tests).")
def demo(out, cache, report, json_out, tiny):
    """Build (or reuse) the demo dataset and model, convert it to every built-in target, evaluate
    each artifact against the Keras model on the held-out demo splits (val, val_hard), and
    inspect the int8 artifacts layer by layer (OUT-report/inspect/)."""
    from .demo_run import run_demo

    run_demo(out, cache, json_out, tiny=tiny, report=report)


# ---------------------------------------------------------------- bench
@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first (the first is reported apart).")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: the target profile's).")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Images (class sub-folders named as in labels.txt give top-1/top-5 per class).",
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    metavar="PRED.json",
    help="The --json of an fp32 `bench --data` run: top-1 agreement and flipped images.",
)
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[PATH]")
def bench(artifact, runs, warmup, threads, data, reference, json_out):
    """Measure one artifact's latency (and accuracy with --data) with its own runtime, on this device."""
    from . import api
    from .artifact import check_output_file
    from .benchmark import print_bench

    check_output_file(json_out, "--json")
    result = api.bench(artifact, runs=runs, warmup=warmup, threads=threads, data=data, reference=reference)
    if json_out:
        _emit_json(result, json_out)
    if json_out != "-":
        print_bench(result)


# ---------------------------------------------------------------- evaluate
@cli.command()
@click.option(
    "--model",
    "model",
    required=True,
    metavar="M",
    help="The Keras model the artifacts were converted from (.keras, .h5, SavedModel folder, keras:xception).",
)
@click.option(
    "--artifacts",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="The --out folder of convert (every sub-folder with a manifest.json), or one artifact folder.",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR|LIST",
    help="Labelled images: class sub-folders named as in labels.txt, or a list file of 'relative/path label' lines.",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=Path("report"),
    show_default=True,
    metavar="OUT",
    help="Folder for report.json, report.md, report.html and the per-artifact results.",
)
@click.option("--resume", is_flag=True, help="Reuse the results an earlier (interrupted) run stored in OUT/results/.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed latency runs per model.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first.")
@click.option(
    "--decode-threads",
    type=int,
    default=2,
    show_default=True,
    help="Background threads decoding images while the models run (0: decode first, then infer).",
)
@click.option("--unsafe-model", is_flag=True, help="Load a .keras file with Keras safe mode off (Lambda layers).")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[PATH]")
def evaluate(model, artifacts, data, report, resume, runs, warmup, decode_threads, unsafe_model, json_out):
    """Compare the Keras fp32 model and every artifact on the same labelled images: top-1/top-5,
    drop vs fp32, agreement, flips per class, latency, size; writes OUT/report.{json,md,html}."""
    from . import api
    from .artifact import check_output_file
    from .report import print_report

    check_output_file(json_out, "--json")
    result = api.evaluate(
        model,
        artifacts,
        data,
        report=report,
        resume=resume,
        runs=runs,
        warmup=warmup,
        decode_threads=decode_threads,
        unsafe_model=unsafe_model,
    )
    if json_out:
        _emit_json(result, json_out)
    if json_out != "-":
        print_report(result)


# ---------------------------------------------------------------- gate
@cli.command()
@click.argument("report", type=click.Path(path_type=Path))
@click.option(
    "--gates",
    "gates_file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="TOML overriding the profiles' [gates] per target or artifact folder: [TARGET] max_top1_drop_pp = 1.5; "
    "[NAME] ungated = true for an artifact no gate applies to.",
)
@click.option(
    "--junit", type=click.Path(path_type=Path), metavar="OUT.xml", help="Write JUnit XML (one test case per artifact and gate)."
)
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[PATH]")
def gate(report, gates_file, junit, json_out):
    """Check every artifact of REPORT.json (from `evaluate`) against its target's accuracy gates.
    Exit 0: all pass; 1: a gate fails; 2: bad input."""
    import dataclasses

    from .artifact import atomic_write_text, check_output_file
    from . import api
    from .gates import describe, junit_xml, load_report, table_rows

    check_output_file(junit, "--junit")  # before any work: a folder or an unwritable place is bad input
    check_output_file(json_out, "--json")
    data = load_report(report)
    results = api.gate(data, gates=gates_file)
    if junit is not None:
        atomic_write_text(junit, junit_xml(results))
    if json_out:
        _emit_json({"passed": all(r.passed for r in results), "results": [dataclasses.asdict(r) for r in results]}, json_out)
    if json_out != "-":
        from .tables import gate_table

        gate_table(table_rows(results))
    failed = [r for r in results if not r.passed]
    for r in failed:
        console.error(f"gate failed: {describe(r)}")
    if failed:
        from .gates import inspect_hints

        for hint in inspect_hints(data, results):
            console.info(hint)
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------- inspect
@cli.command()
@click.argument("artifacts", type=click.Path(path_type=Path))
@click.option(
    "--model", "model", required=True, metavar="M", help="The Keras model (.keras/.h5) the artifacts were converted from."
)
@click.option(
    "--calibration",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR|LIST",
    help="The calibration images the artifacts were made with (the same sample is drawn again).",
)
@click.option("--calibration-root", type=click.Path(path_type=Path), metavar="DIR", help="Root of a list file's paths.")
@click.option("--num-images", type=int, default=32, show_default=True, help="Images to measure the activations on.")
@click.option("--top", type=int, default=10, show_default=True, help="Layers shown per artifact (all are in the JSON).")
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=Path("inspect-report"),
    show_default=True,
    metavar="OUT",
    help="Folder for inspect.json, inspect.md and inspect.html (with the plot).",
)
@click.option("--unsafe-model", is_flag=True, help="Load a .keras file with Keras safe mode off (Lambda layers).")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[PATH]")
def inspect(artifacts, model, calibration, calibration_root, num_images, top, report, unsafe_model, json_out):
    """Per-layer quantization error of each int8 artifact in ARTIFACTS (one artifact folder or the
    --out folder of convert): SQNR vs fp32, layer type and MAC share, worst first."""
    from . import api
    from .artifact import check_output_file
    from .inspection.report import print_inspect

    check_output_file(json_out, "--json")
    result = api.inspect(
        artifacts,
        model,
        calibration,
        calibration_root=calibration_root,
        num_images=num_images,
        top=top,
        report=report,
        unsafe_model=unsafe_model,
    )
    files = result["files"]
    if json_out:
        _emit_json(result, json_out)
    if json_out != "-":
        print_inspect(result, top)
        click.echo(f"report: {files['html']} (also inspect.md, inspect.json)")


# ---------------------------------------------------------------- targets
@cli.group()
def targets():
    """Built-in target device profiles."""


@targets.command("list")
@click.option("--json", "as_json", is_flag=True)
def targets_list(as_json):
    """List the built-in targets."""
    from .targets import builtin_names, resolve_target

    profiles = [resolve_target(n) for n in builtin_names()]
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    from .tables import targets_table

    targets_table(profiles)


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def targets_show(name, as_json):
    """Show one target profile (a built-in name or a .toml path)."""
    from .targets import resolve_target

    p = resolve_target(name)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    click.echo(f"# {p.source}")
    click.echo(Path(p.source).read_text(encoding="utf-8").rstrip())


# ---------------------------------------------------------------- calibration
@cli.group()
def calibration():
    """Calibration-set lists."""


@calibration.command("make")
@click.option(
    "--from",
    "src",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Folder of images (class sub-folders give a class-balanced sample).",
)
@click.option("--num", type=int, default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), metavar="FILE")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def calibration_make(src, num, seed, out, force):
    """Write a deterministic, class-balanced list of calibration images (paths relative to --from)."""
    from .artifact import check_output_file
    from .calibration import open_source, write_list
    from .errors import BadInput

    if num < 1:
        raise BadInput(f"--num {num} must be at least 1")
    if seed < 0:
        raise BadInput(f"--seed {seed} must be 0 or more (numpy's generator takes no negative seed)")
    check_output_file(out, "--out")
    if out.exists() and not force:
        raise BadInput(f"--out {out} already exists; pass --force to overwrite it")
    source = open_source(src)
    n = write_list(source, num, seed, out)
    if n < num:
        console.warn(f"{src} has only {n} images; the list holds {n}, not {num}")
    click.echo(f"wrote {out}: {n} images from {src} (seed {seed})")


def main() -> None:
    """Console-script entry: Ctrl-C always stops the run (exit 130), and native (C++) log noise
    stays out of the terminal unless --verbose."""
    interrupts.install()
    if "-v" not in sys.argv[1:] and "--verbose" not in sys.argv[1:]:
        console.capture_native_stderr()
    try:
        cli(prog_name="xception-edge")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if interrupts.interrupted() and code != interrupts.exit_code():
        console.error("interrupted; nothing half-written was left behind")  # a framework swallowed the interrupt
        code = interrupts.exit_code()
    sys.exit(code)
