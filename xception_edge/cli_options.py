"""The click options that several commands share, declared once. Each is a decorator, or a
function of the help text that differs between commands; a group of options (``keras_xception``,
``preprocessing``) lists them in the order ``--help`` shows them."""

from __future__ import annotations

from pathlib import Path

import click

UNSAFE_MODEL_HELP = "Load a .keras file with Keras safe mode off (Lambda layers)."


def path_option(*decls: str, **attrs):
    """An option that takes a file or folder, given to the command as a ``Path``."""
    return click.option(*decls, type=click.Path(path_type=Path), **attrs)


def options(*decorators):
    """Several options as one decorator, shown in ``--help`` in the order given."""

    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def executor(help: str):
    """``--executor local|ray`` and ``--ray-address HOST:PORT``: where the work runs."""
    return options(
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help=help),
        click.option(
            "--ray-address",
            metavar="HOST:PORT",
            default=None,
            help="With --executor ray: the Ray cluster's head (default: a local Ray).",
        ),
    )


def model(help: str):
    """``--model M``: the Keras source model (required)."""
    return click.option("--model", "model", required=True, metavar="M", help=help)


def calibration(help: str, *, required: bool = False):
    """``--calibration DIR|LIST``: calibration images, a folder or a list file."""
    return path_option("--calibration", required=required, metavar="DIR|LIST", help=help)


def calibration_root(help: str):
    """``--calibration-root DIR``: what a calibration list file's paths are relative to."""
    return path_option("--calibration-root", metavar="DIR", help=help)


def unsafe_model(help: str = UNSAFE_MODEL_HELP):
    """``--unsafe-model``: load a .keras file with Keras safe mode off."""
    return click.option("--unsafe-model", is_flag=True, help=help)


def json_output(help: str | None = None):
    """``--json[=PATH]``: machine-readable results to stdout or a file (the parameter ``json_out``)."""
    return click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[PATH]", help=help)


# ``--json``: a flag that prints JSON instead of a table (the parameter ``as_json``).
json_flag = click.option("--json", "as_json", is_flag=True)


def runs(help: str):
    """``--runs N``: timed runs (default 50)."""
    return click.option("--runs", type=int, default=50, show_default=True, help=help)


def warmup(help: str):
    """``--warmup N``: untimed runs first (default 5)."""
    return click.option("--warmup", type=int, default=5, show_default=True, help=help)


def seed(help: str | None = None):
    """``--seed N``: the seed of a deterministic sample (default 0)."""
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def report(default: Path, help: str):
    """``--report OUT``: the folder a command writes its report files to."""
    return path_option("--report", default=default, show_default=True, metavar="OUT", help=help)


labels = path_option(
    "--labels",
    metavar="FILE",
    help="Class names, one per line (default: the calibration folder's class sub-folders, sorted).",
)


def choice(name: str, values: tuple[str, ...], help: str | None = None):
    """An option that takes one of ``values``, the first by default."""
    return click.option(name, type=click.Choice(list(values)), default=values[0], show_default=True, help=help)


# The stock architecture's options (`--model keras:xception`).
keras_xception = options(
    choice("--weights", ("imagenet", "none"), "keras:xception only: ImageNet weights (needs the internet) or random."),
    click.option("--input-size", type=int, default=299, show_default=True, help="keras:xception only: input size (≥71)."),
    click.option("--num-classes", type=int, default=1000, show_default=True, help="keras:xception only: classes."),
)

# How images are resized to the model's input.
preprocessing = options(
    choice(
        "--resize",
        ("resize", "crop"),
        "Plain resize (as image_dataset_from_directory) or shorter side + centre crop (ImageNet style).",
    ),
    click.option("--crop-fraction", type=float, default=0.875, show_default=True, help="With --resize crop."),
    choice("--interpolation", ("bilinear", "bicubic")),
)


# Where a command runs the artifacts (`bench`; `evaluate` next): the device and its interpreter.
device = options(
    click.option(
        "--device",
        default="local",
        show_default=True,
        metavar="SPEC",
        help="Run on: local, ssh://[user@]host[:port] (honours ~/.ssh/config), or emulated:arm64[:CPU] "
        "(an aarch64 Python under QEMU, built once under the cache; CPU default cortex-a76, the Raspberry Pi 5's).",
    ),
    click.option(
        "--device-python",
        metavar="PATH",
        help="The device's Python or venv interpreter (default: python3; emulated: /usr/bin/python3.11). "
        "With --device local it runs the artifact in that interpreter.",
    ),
    click.option("--keep", is_flag=True, help="Keep the device's temporary folder (its path is printed)."),
    click.option(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help="Deal the timed runs into N rounds, each after its own warm-up (default: 1 here, 3 on a device).",
    ),
    click.option(
        "--cooldown",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Rest before each round, so one artifact's heat does not slow the next (default: 2 on an ssh device, else 0).",
    ),
)
