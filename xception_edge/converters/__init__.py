"""Converters: each backend's ``convert.py`` (xception_edge/backends/<name>/), imported only when a
target of that backend is built."""

from __future__ import annotations

from .base import ConvertedModel


def converter_for(backend: str):
    """The backend's ``convert(source, profile, calibration, stage, exports)`` function."""
    from .. import backends

    return backends.get(backend).converter()


__all__ = ["ConvertedModel", "converter_for"]
