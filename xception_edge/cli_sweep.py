"""`sweep`: calibration diagnostics, one target over a grid of calibration size x seed x method x
transforms, here or on Ray."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli_options as opt
from .cli import _emit_json, cli


@cli.command()
@opt.model("The Keras model to convert (.keras, .h5, SavedModel folder).")
@click.option("--target", required=True, metavar="T", help="One int8 target: a built-in name or a path to a .toml profile.")
@opt.calibration("Calibration images the cells sample from: a folder (class sub-folders optional) or a list file.", required=True)
@opt.calibration_root("Folder a list file's paths are relative to (default: the list file's folder).")
@opt.path_option(
    "--validation",
    required=True,
    metavar="DIR|LIST",
    help="Labelled held-out images every cell is evaluated on (class sub-folders, or a list file of 'path label').",
)
@click.option(
    "--grid",
    "grid",
    multiple=True,
    required=True,
    metavar="FILE|KEY=V,V",
    help="The axes: a .toml/.json file, or repeated KEY=V1,V2 (size=100,300 seed=0,1,2 method=minmax,entropy "
    "transforms=none,cle,cle+bias_correction). Left out: the profile's own size, method and transforms; seed 0.",
)
@opt.path_option(
    "--out",
    default=Path("sweep"),
    show_default=True,
    help="Output folder: sweep.json, sweep.md, sweep.html, and each cell's artifact in OUT/cells/<cell>/.",
)
@click.option("--resume", is_flag=True, help="Reuse the finished cells an earlier (interrupted) sweep left in OUT/cells/.")
@opt.executor(
    "Run the cells in this process, or as Ray tasks (pip install 'xception-edge[ray]'; paths must be on a "
    "filesystem every node sees)."
)
@opt.labels
@opt.unsafe_model()
@opt.preprocessing
@opt.json_output("Write sweep.json's content to stdout (--json) or a file (--json=PATH).")
def sweep(
    model, target, calibration, calibration_root, validation, grid, out, resume, executor, ray_address, labels,
    unsafe_model, resize, crop_fraction, interpolation, json_out,
):  # fmt: skip
    """Convert one int8 --target over a grid of calibration size x seed x method x transforms,
    evaluate every cell on --validation against the Keras model, and recommend the smallest
    calibration size whose spread over seeds is within noise; writes OUT/sweep.{json,md,html}."""
    from . import api
    from .artifact import check_output_file
    from .sweeps.report import print_sweep

    check_output_file(json_out, "--json")
    result = api.sweep(
        model, target, calibration=calibration, validation=validation, grid=grid, out=out,
        calibration_root=calibration_root, labels=labels, unsafe_model=unsafe_model, resize=resize,
        crop_fraction=crop_fraction, interpolation=interpolation, executor=executor, ray_address=ray_address,
        resume=resume,
    )  # fmt: skip
    if json_out:
        _emit_json(result, json_out)
    if json_out != "-":
        print_sweep(result)
