"""One result schema for per-layer quantization error, whatever the backend.

A backend module measures, for every quantized layer it can see, the SQNR between the fp32
model's activation and the quantized model's activation at that layer's output, both models fed
the same images (errors accumulate: this is what the next layer receives). Where the backend's
own tool also gives the layer's error on its own (fed float inputs), that is ``own_sqnr_db``.
``added_db`` is what the layer itself costs: the SQNR at its input minus the SQNR at its output.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..records import Manifest
from .layers import LayerPart, float_mac_share, total_macs

SQNR_CAP_DB = 120.0  # identical tensors (no noise) are reported as this, not infinity


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10·log10(Σref² / Σ(ref−test)²) over all elements; capped at SQNR_CAP_DB."""
    ref = np.asarray(ref, np.float64).ravel()
    test = np.asarray(test, np.float64).reshape(ref.shape)
    noise = float(np.sum((ref - test) ** 2))
    signal = float(np.sum(ref**2))
    if noise <= signal * 10 ** (-SQNR_CAP_DB / 10):
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return max(-SQNR_CAP_DB, 10.0 * math.log10(signal / noise))


class SqnrAccumulator:
    """Σref² and Σ(ref−test)² over many images, so SQNR is over the whole set, not averaged per image."""

    def __init__(self):
        self.signal = 0.0
        self.noise = 0.0
        self.count = 0

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        ref = np.asarray(ref, np.float64).ravel()
        test = np.asarray(test, np.float64).reshape(ref.shape)
        self.signal += float(np.sum(ref**2))
        self.noise += float(np.sum((ref - test) ** 2))
        self.count += 1

    def db(self) -> float:
        if self.noise <= self.signal * 10 ** (-SQNR_CAP_DB / 10):
            return SQNR_CAP_DB
        if self.signal == 0.0:
            return -SQNR_CAP_DB
        return max(-SQNR_CAP_DB, 10.0 * math.log10(self.signal / self.noise))


@dataclasses.dataclass
class InspectContext:
    """What a backend's ``measure(ctx)`` gets. The artifact was converted from ``source`` with
    ``profile`` and the calibration images ``calib`` (the same sample: same source, seed, count),
    so a backend that must re-quantize to use its own debugging tool gets the same int8 model."""

    artifact: Path  # the artifact folder (manifest checked)
    manifest: Manifest
    profile: Any  # TargetProfile the artifact was converted with
    source: Any  # model_io.SourceModel (keras_model set for .keras/.h5/keras:xception)
    calib: Any  # calibration.CalibrationSet: decoded, preprocessed as the manifest says
    images: np.ndarray  # (N, H, W, 3) float32 preprocessed images to measure on
    exports: Any  # exports.Exports: the run's exports of ``source`` (scratch folder ``exports.workdir``)
    parts: dict[str, LayerPart]  # layers.layer_parts(source.keras_model); {} without a Keras model


@dataclasses.dataclass
class LayerError:
    """One measured layer (a backend module fills node..own_sqnr_db; finish() the rest)."""

    node: str  # the backend's own op / tensor name
    layer: str | None  # LayerPart name ("block4_sepconv1/depthwise"), None if not matched
    sqnr_db: float  # fp32 vs quantized activation at the layer's output (accumulated)
    input_sqnr_db: float | None = None  # same, at the layer's (worst) input
    own_sqnr_db: float | None = None  # the layer's error alone, from the backend's own tool
    kind: str = "other"
    keras_layer: str | None = None  # the Keras layer to keep in float to fix it
    macs: int = 0
    mac_share: float = 0.0
    order: int = 10**9
    added_db: float | None = None  # input_sqnr_db - sqnr_db, at least 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("sqnr_db", "input_sqnr_db", "own_sqnr_db", "added_db"):
            if d[k] is not None:
                d[k] = round(d[k], 3)
        d["mac_share"] = round(d["mac_share"], 6)
        return d


def finish(errors: list[LayerError], parts: dict[str, LayerPart]) -> list[LayerError]:
    """Fill kind, Keras layer, MACs and added_db from the Keras layer table; rank worst SQNR first."""
    total = total_macs(parts) or 1
    for e in errors:
        part = parts.get(e.layer) if e.layer else None
        if part is not None:
            e.kind, e.keras_layer, e.macs, e.order = part.kind, part.layer if part.weighted else None, part.macs, part.order
            e.mac_share = part.macs / total
        if e.input_sqnr_db is not None:
            e.added_db = max(0.0, e.input_sqnr_db - e.sqnr_db)
    return sorted(errors, key=lambda e: (e.sqnr_db, e.order))


def _noise(db: float | None) -> float:
    """SQNR in dB -> noise power relative to the signal (0 for None)."""
    return 0.0 if db is None else 10.0 ** (-db / 10.0)


def harm(e: LayerError) -> float:
    """How much noise a layer adds, relative to its signal: the larger of the noise it adds end
    to end (noise/signal at its output minus at its input: catches an input range crushed by an
    outlier channel, which a whole-tensor SQNR of the layer alone hides) and its own error from
    the backend's tool (its weight and output rounding alone). Linear, not dB: going from 40 to
    30 dB adds far less noise than going from 20 to 10 dB."""
    added = _noise(e.sqnr_db) - _noise(e.input_sqnr_db) if e.input_sqnr_db is not None else 0.0
    return max(
        added, _noise(e.own_sqnr_db), 0.0 if e.input_sqnr_db is not None or e.own_sqnr_db is not None else _noise(e.sqnr_db)
    )


def blame(errors: list[LayerError], already_float=()) -> list[str]:
    """Keras layers that can be kept in float, most harmful first (``harm``), each once; layers
    already in float are left out."""
    skip = set(already_float)
    out: list[str] = []
    for e in sorted(errors, key=lambda e: (-harm(e), e.order)):
        if e.keras_layer and e.keras_layer not in out and e.keras_layer not in skip:
            out.append(e.keras_layer)
    return out


__all__ = ["InspectContext", "LayerError", "SqnrAccumulator", "blame", "harm", "finish", "float_mac_share", "sqnr_db"]
