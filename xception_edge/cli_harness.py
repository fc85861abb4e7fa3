"""`bench`, `evaluate`, `gate` and `inspect`: the commands that measure artifacts."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli_options as opt
from . import console
from .cli import _emit_json, cli


# ---------------------------------------------------------------- bench
@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@opt.runs("Timed runs.")
@opt.warmup("Untimed runs first (the first is reported apart).")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: the target profile's).")
@opt.path_option(
    "--data",
    metavar="DIR",
    help="Images (class sub-folders named as in labels.txt give top-1/top-5 per class).",
)
@opt.path_option(
    "--reference",
    metavar="PRED.json",
    help="The --json of an fp32 `bench --data` run: top-1 agreement and flipped images.",
)
@opt.device
@opt.json_output()
def bench(artifact, runs, warmup, threads, data, reference, device, device_python, keep, rounds, cooldown, json_out):
    """Measure one artifact's latency (and accuracy with --data) with its own runtime, on this
    machine or on --device (then also parity: the device's outputs against this host's)."""
    from . import api
    from .artifact import check_output_file
    from .benchmark import print_bench

    check_output_file(json_out, "--json")
    result = api.bench(
        artifact, runs=runs, warmup=warmup, threads=threads, data=data, reference=reference, device=device,
        device_python=device_python, keep=keep, rounds=rounds, cooldown=cooldown,
    )  # fmt: skip
    if json_out:
        _emit_json(result, json_out)
    if json_out != "-":
        print_bench(result)


# ---------------------------------------------------------------- evaluate
@cli.command()
@opt.model("The Keras model the artifacts were converted from (.keras, .h5, SavedModel folder, keras:xception).")
@opt.path_option(
    "--artifacts",
    required=True,
    metavar="DIR",
    help="The --out folder of convert (every sub-folder with a manifest.json), or one artifact folder.",
)
@opt.path_option(
    "--data",
    required=True,
    metavar="DIR|LIST",
    help="Labelled images: class sub-folders named as in labels.txt, or a list file of 'relative/path label' lines.",
)
@opt.report(Path("report"), "Folder for report.json, report.md, report.html and the per-artifact results.")
@click.option(
    "--resume",
    is_flag=True,
    help="Reuse the results (and Ray shards) an earlier (interrupted) run stored in OUT/results/ (OUT/shards/).",
)
@opt.runs("Timed latency runs per model.")
@opt.warmup("Untimed runs first.")
@click.option(
    "--decode-threads",
    type=int,
    default=2,
    show_default=True,
    help="Background threads decoding images while the models run (0: decode first, then infer).",
)
@opt.unsafe_model()
@opt.device
@opt.executor(
    "ray: the accuracy passes as Ray tasks over shards of the images (pip install 'xception-edge[ray]'); "
    "latency is still timed here, and --device still runs every artifact on the device from here."
)
@click.option(
    "--ship-data",
    is_flag=True,
    help="Send the images, artifacts and model through Ray's object store (nodes without a shared filesystem).",
)
@click.option("--shard-size", type=int, default=None, help="Images per Ray task, a multiple of 32 (default 256).")
@opt.json_output()
def evaluate(
    model, artifacts, data, report, resume, runs, warmup, decode_threads, unsafe_model, device, device_python, keep, rounds,
    cooldown, executor, ray_address, ship_data, shard_size, json_out,
):  # fmt: skip
    """Compare the Keras fp32 model and every artifact on the same labelled images: top-1/top-5,
    drop vs fp32, agreement, flips per class, latency, size; writes OUT/report.{json,md,html}.
    With --device, every artifact also runs there: its rows sit next to this host's, with
    parity (the device's outputs against this host's on the same images)."""
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
        device=device,
        device_python=device_python,
        keep=keep,
        rounds=rounds,
        cooldown=cooldown,
        executor=executor,
        ray_address=ray_address,
        ship_data=ship_data,
        shard_size=shard_size,
    )
    if json_out:
        _emit_json(result.to_dict(), json_out)
    if json_out != "-":
        print_report(result)


# ---------------------------------------------------------------- gate
@cli.command()
@click.argument("report", type=click.Path(path_type=Path))
@opt.path_option(
    "--gates",
    "gates_file",
    metavar="FILE",
    help="TOML overriding the profiles' [gates] per target or artifact folder: [TARGET] max_top1_drop_pp = 1.5; "
    "[NAME] ungated = true for an artifact no gate applies to.",
)
@opt.path_option("--junit", metavar="OUT.xml", help="Write JUnit XML (one test case per artifact and gate).")
@opt.json_output()
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
@opt.model("The Keras model (.keras/.h5) the artifacts were converted from.")
@opt.calibration("The calibration images the artifacts were made with (the same sample is drawn again).", required=True)
@opt.calibration_root("Root of a list file's paths.")
@click.option("--num-images", type=int, default=32, show_default=True, help="Images to measure the activations on.")
@click.option("--top", type=int, default=10, show_default=True, help="Layers shown per artifact (all are in the JSON).")
@opt.report(Path("inspect-report"), "Folder for inspect.json, inspect.md and inspect.html (with the plot).")
@opt.unsafe_model()
@opt.json_output()
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
