"""A transform's options: known names only, over its defaults; the weight grid's bit width checked
where the transform has one. A one-line BadInput names the transform and the option."""

from __future__ import annotations

from ..errors import BadInput


def merge(name: str, options: dict, defaults: dict) -> dict:
    """``defaults`` updated with ``options``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise BadInput(f"{name}: unknown option(s) {', '.join(unknown)}; known options: {', '.join(defaults)}")
    opts = {**defaults, **options}
    if "weight_bits" in opts and opts["weight_bits"] not in range(2, 9):
        raise BadInput(f"{name}: weight_bits {opts['weight_bits']!r} must be an integer from 2 to 8")
    return opts
