"""Per-layer quantization error of an int8 artifact against its fp32 source (`xception-edge inspect`),
and the ranking of layers to keep in float (`convert --max-drop`). Each backend's ``inspect.py``
(xception_edge/backends/<name>/) uses the backend's own facility and is imported only when an
artifact of that backend is inspected."""

from __future__ import annotations


def backend_module(backend: str):
    """The module with ``measure(ctx) -> list[LayerError]`` for ``backend``."""
    from .. import backends

    return backends.get(backend).inspector()
