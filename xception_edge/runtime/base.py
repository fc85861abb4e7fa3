"""The runtime interface (numpy only) and the quantize/dequantize rules shared by backends."""

from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np

from ..records import Manifest, TensorSpec, relative_file

_DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8}


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """float -> the artifact's input dtype (affine: q = round(x / scale) + zero_point, clipped)."""
    if not spec.quantized:
        return np.asarray(x, dtype=_DTYPES[spec.dtype])
    info = np.iinfo(_DTYPES[spec.dtype])
    q = np.round(np.asarray(x, np.float32) / np.float32(spec.scale)) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(_DTYPES[spec.dtype])


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if not spec.quantized:
        return np.asarray(q, dtype=np.float32)
    return ((q.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)).astype(np.float32)


class Runtime(abc.ABC):
    """An opened artifact. Subclasses implement ``_load`` and ``invoke`` (one raw batch)."""

    backend = ""
    note: str | None = None  # set when the artifact runs here with other kernels than on its device

    def __init__(self, folder: Path, manifest: Manifest, *, threads: int | None = None):
        self.folder = Path(folder)
        self.manifest = manifest
        # --threads wins; else the profile's count, capped at this machine's cores
        self.threads = int(threads or min(manifest.threads or 1, os.cpu_count() or 1))
        self.model_path = relative_file(manifest.model_file, self.folder, f"{self.folder}: model_file")
        self.input_spec = manifest.input
        self.output_spec = manifest.output
        self._load()

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def invoke(self, x: np.ndarray) -> np.ndarray:
        """Run one batch already in the input dtype; return the raw output."""

    @property
    def batch_size(self) -> int:
        """The batch the artifact's input takes (1 for fixed-shape edge models)."""
        b = self.input_spec.shape[0] if self.input_spec.shape else 1
        return b if isinstance(b, int) and b > 0 else 1

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed float images (N, H, W, 3) -> class probabilities (N, classes) float32."""
        b = self.batch_size
        outs = []
        for i in range(0, len(images), b):
            chunk = images[i : i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n,) + chunk.shape[1:], chunk.dtype)])
            raw = self.invoke(quantize(chunk, self.input_spec))
            outs.append(dequantize(raw, self.output_spec)[:n])
        return np.concatenate(outs) if outs else np.empty((0, self.output_spec.shape[-1]), np.float32)
