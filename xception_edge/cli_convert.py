"""`convert` and `demo`: the commands that write artifacts."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli_options as opt
from .cli import _emit_json, cli


# ---------------------------------------------------------------- convert
@cli.command()
@opt.model("A .keras or .h5 file, a SavedModel folder, or keras:xception (stock architecture).")
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    metavar="T",
    help="Built-in target name, a path to a .toml profile, or 'all'. Repeatable.",
)
@opt.calibration("Calibration images: a folder (class sub-folders optional) or a list file of relative paths.")
@opt.calibration_root("Folder a list file's paths are relative to (default: the list file's folder).")
@click.option(
    "--num-calibration",
    type=int,
    metavar="N",
    help="Calibration images to sample (default: the target profile's calibration_size, 300).",
)
@opt.seed("Seed of the deterministic sampling.")
@opt.path_option(
    "--out",
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
@opt.path_option(
    "--verify-data",
    metavar="DIR",
    help="Held-out images for verification (default: calibration images not used for calibration).",
)
@opt.labels
@opt.unsafe_model("Load .keras files with Keras safe mode off (Lambda layers). Trust the file first.")
@opt.keras_xception
@opt.preprocessing
@click.option(
    "--max-drop",
    type=float,
    default=None,
    metavar="PP",
    help="Accuracy budget: top-1 drop (percentage points) on --validation that an int8 artifact may lose; "
    "over it, the most harmful layers are kept in float (up to the profile's max_float_mac_share).",
)
@opt.path_option(
    "--validation",
    metavar="DIR|LIST",
    help="Labelled held-out images for --max-drop (class sub-folders, or a list file of 'path label').",
)
@click.option(
    "--strict", is_flag=True, help="Validation images that are also calibration images (same sha256) are an error, not a warning."
)
@click.option(
    "--transform",
    "transforms",
    multiple=True,
    metavar="NAME",
    help="Pre-quantization transform of the Keras model for the int8 targets, instead of the profiles' own "
    "[quantization] transforms (repeat for several, in order; 'none' for none): cle (cross-layer equalization), "
    "bias_correction (on the target's weight grid), adaround (learned rounding on the grid; slow, last).",
)
@opt.json_output("Write machine-readable results to stdout (--json) or a file (--json=PATH).")
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
    transforms,
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
        transforms=_transforms(transforms),
    )
    _report_conversions(results, json_out)
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)


def _transforms(given: tuple[str, ...]) -> tuple[str, ...] | None:
    """--transform's values: None when not given (the profiles decide), () for 'none'."""
    from .errors import BadInput

    if not given:
        return None
    if "none" in given:
        if len(given) > 1:
            raise BadInput(f"--transform none turns every transform off; it cannot be combined with {', '.join(given)}")
        return ()
    return given


def _report_conversions(results, json_out) -> None:
    from .tables import conversion_table

    if json_out:
        import dataclasses

        _emit_json({"results": [dataclasses.asdict(r) for r in results]}, json_out)
    if json_out != "-":
        conversion_table(results)


# ---------------------------------------------------------------- demo
@cli.command()
@opt.path_option("--out", default=Path("demo-artifacts"), show_default=True)
@opt.path_option(
    "--cache",
    default=None,
    help="Where the demo data and model are cached (default: $XCEPTION_EDGE_CACHE or ~/.cache/xception-edge).",
)
@opt.path_option(
    "--report",
    default=None,
    metavar="DIR",
    help="Where the evaluation reports go: DIR/val/ and DIR/val_hard/ (default: OUT-report).",
)
@opt.json_output()
@click.option("--tiny", is_flag=True, hidden=True, help="A small, quick demo variant (for tests).")
def demo(out, cache, report, json_out, tiny):
    """Build (or reuse) the demo dataset and model, convert it to every built-in target, evaluate
    each artifact against the Keras model on the held-out demo splits (val, val_hard), and
    inspect the int8 artifacts layer by layer (OUT-report/inspect/)."""
    from .demo_run import run_demo

    run_demo(out, cache, json_out, tiny=tiny, report=report)
