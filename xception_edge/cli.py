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


# The commands, one module per family; importing them registers them on `cli`.
from . import cli_catalog, cli_convert, cli_device, cli_harness, cli_sweep  # noqa: E402, F401
