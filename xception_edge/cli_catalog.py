"""`targets` and `calibration`: the built-in profiles and calibration lists."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import cli_options as opt
from . import console
from .cli import cli


# ---------------------------------------------------------------- targets
@cli.group()
def targets():
    """Built-in target device profiles."""


@targets.command("list")
@opt.json_flag
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
@opt.json_flag
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
@opt.path_option(
    "--from",
    "src",
    required=True,
    metavar="DIR",
    help="Folder of images (class sub-folders give a class-balanced sample).",
)
@click.option("--num", type=int, default=300, show_default=True)
@opt.seed()
@opt.path_option("--out", required=True, metavar="FILE")
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
