"""`device setup`: prepare a device ahead of time (today: build the emulated arm64 device)."""

from __future__ import annotations

import time

import click

from . import cli_options as opt
from .cli import _emit_json, cli


@cli.group()
def device() -> None:
    """Devices that `bench --device` runs on: local, ssh://[user@]host[:port], emulated:arm64[:CPU]."""


@device.command()
@click.argument("spec", metavar="DEVICE")
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    metavar="BACKEND",
    help="Install this backend's runtime (repeatable; default: every backend's).",
)
@opt.json_output()
def setup(spec, runtimes, json_out):
    """Build the emulated device (DEVICE = emulated:arm64) under the toolkit's cache with the
    runtimes: a Debian arm64 Python run by QEMU, no root, nothing changed outside the cache."""
    from . import backends, console
    from .devices import emulated
    from .devices.spec import parse
    from .errors import BadInput

    parsed = parse(spec)
    if not parsed.emulated:
        raise BadInput(
            f"device setup {spec}: only emulated devices are set up by the toolkit; {spec} needs nothing ahead of time"
        )
    names = tuple(runtimes) or tuple(n for n in backends.names() if backends.get(n).device_requires)
    for name in names:
        emulated.check_runtime(backends.get(name, "--runtime").name)
    t0 = time.perf_counter()
    dev = emulated.ensure(names)
    stamp = dict(dev.stamp, folder=str(dev.folder), setup_seconds=round(time.perf_counter() - t0, 1))
    if json_out:
        _emit_json(stamp, json_out)
    if json_out != "-":
        main = {b: [*backends.get(b).device_requires, "numpy"] for b in stamp["runtimes"]}
        runtimes_text = "; ".join(
            f"{b}: " + ", ".join(f"{d} {vs.get(d)}" for d in main[b]) for b, vs in stamp["runtimes"].items()
        )
        console.info(f"{parsed.label}: Python {stamp['python']} (Debian {stamp['debian']} arm64), QEMU {stamp['qemu']}")
        console.info(f"runtimes: {runtimes_text or 'none'}")
        click.echo(f"ready in {stamp['setup_seconds']:.0f} s: {dev.folder}")
