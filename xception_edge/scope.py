"""A profile's ``[quantization] ignored_scope`` checked against the source model: the one check of
its entries, run once the model is loaded and before any target converts (``pipeline``'s
``precheck_source``).

An entry names a Keras layer of the source model, or, where the backend allows it
(``BackendSpec.native_scope``), an op or tensor of its converted model; the backend checks those
after converting, and its errors for them come from ``unknown_entry`` here too. A backend that
keeps only some layer classes in float says which (``BackendSpec.scope_kinds``).
"""

from __future__ import annotations

import difflib
import re

from .errors import BadInput
from .profiles import Precision


def keras_layers(src) -> dict[str, str]:
    """{layer name: class name} of the source's Keras model, nested layers included ({} for a SavedModel)."""
    from .model_io import _all_layers

    return {layer.name: layer.__class__.__name__ for layer in _all_layers(src.keras_model)} if src.keras_model is not None else {}


def where(profile) -> str:
    source = f" ({profile.source})" if profile.source and profile.source != profile.name else ""
    return f"{profile.name}{source}: [quantization] ignored_scope entry"


def unknown_entry(profile, entry: str, src, pool=(), native: str = "") -> BadInput:
    """The error for an entry that names nothing: the close names among the Keras layers and ``pool``
    (names of the converted model); ``native`` says what else the backend would take."""
    names = sorted(set(keras_layers(src)) | set(pool))
    close = [n for n in names if entry in n] or difflib.get_close_matches(entry, names, n=4, cutoff=0.5)
    if src.keras_model is None:
        instead = f"name {native}, or convert" if native else "convert"
        hint = f" (a SavedModel keeps no Keras layer names: {instead} the .keras file)"
    else:
        hint = f" (or {native} of the converted model)" if native else ""
    near = f"; close layer names: {', '.join(close[:4])}" if close else ""
    return BadInput(f"{where(profile)} '{entry}' is not a layer of {src.spec}{hint}{near}")


def check_entry(profile, entry: str, src, spec) -> bool:
    """BadInput unless ``entry`` is a Keras layer the backend ``spec`` can keep in float, or may be a
    name of its converted model; True when it is a Keras layer."""
    layers = keras_layers(src)
    if entry in layers:
        kinds = spec.scope_kinds
        if kinds and layers[entry] not in kinds:
            prefix = entry.split("_")[0] + "_"
            fits = [n for n, k in layers.items() if k in kinds]
            near = [n for n in fits if n.startswith(prefix)] or difflib.get_close_matches(entry, fits, n=4, cutoff=0.3)
            raise BadInput(
                f"{where(profile)} '{entry}' is a Keras {layers[entry]} layer, which has no weights of its own in the "
                f"{spec.name} model; name a {'/'.join(kinds)} layer, e.g. {', '.join((near or fits)[:4])}"
            )
        return True
    if spec.native_scope and re.fullmatch(spec.native_scope, entry):
        return False  # maybe a name of the converted model: the backend checks it after converting
    raise unknown_entry(profile, entry, src, native=spec.native_names)


def check(profile, src, spec) -> None:
    """Every ignored_scope entry of an int8 profile (the only precision that uses it)."""
    if profile.precision is not Precision.INT8:
        return
    for entry in profile.quantization.ignored_scope:
        check_entry(profile, entry, src, spec)
