"""The run's exports of the source model (a SavedModel, ONNX per opset, and what a backend
derives from them, such as OpenVINO's openvino.Model), made on first request and shared by every
target of the run.

The run owns them: it creates ``Exports(source, workdir)`` in its scratch folder (convert's, the
budget loop's and inspect's temporary directory) and the files go when that folder is deleted.
Backends request what they need (``exports.saved_model()``, ``exports.onnx(opset)``,
``exports.cached(key, make)``) and may keep their own scratch files under ``exports.workdir``.
Every framework is imported inside the method that needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import console, frameworks
from .errors import ConversionFailed, first_line


class Exports:
    """One run's export cache for one source model (``model_io.SourceModel``)."""

    def __init__(self, source, workdir: Path):
        self.source = source
        self.workdir = Path(workdir)
        self._saved_model: Path | None = source.saved_model_dir  # a SavedModel input is used as it is
        self._onnx: dict[int, Path] = {}
        self._derived: dict[str, Any] = {}
        self.onnx_exporter: dict[int, str] = {}  # opset -> what wrote the ONNX export

    def saved_model(self) -> Path:
        """A SavedModel for the converters: the input folder itself, or one export of the Keras model."""
        if self._saved_model is None:
            path = self.workdir / "saved_model"
            with console.progress("Exporting SavedModel", total=None):
                try:
                    self.source.keras_model.export(str(path), format="tf_saved_model", verbose=False)
                except Exception as exc:
                    raise ConversionFailed(f"SavedModel export of {self.source.spec} failed: {first_line(exc)}") from None
            self._saved_model = path
        return self._saved_model

    def cached(self, key: str, make):
        """What ``make()`` returns, made on the first request for ``key`` and shared afterwards: a
        backend's own form of the source (OpenVINO's openvino.Model of the SavedModel)."""
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def onnx(self, opset: int, *, tf2onnx: bool = True) -> Path | None:
        """One ONNX export per opset (NHWC input, dynamic batch). A Keras model made of the layers
        xception_edge.onnx_export writes is written by it (seconds, about the weights' size in
        memory) and checked against Keras; any other model, or a SavedModel, goes through tf2onnx
        (Keras's own ONNX export; the serving signature for a SavedModel), which traces the model
        and peaks at several GB for full-size Xception. ``onnx_exporter[opset]`` says which wrote it.
        With ``tf2onnx=False``, None where the ONNX writer cannot export the model."""
        if opset not in self._onnx:
            path = self.workdir / "onnx" / f"opset{opset}" / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            src = self.source
            if src.keras_model is not None and self._own_onnx(path, opset):
                self._onnx[opset] = path
                return path
            if not tf2onnx:
                return None
            frameworks.tf2onnx()
            with console.progress(f"Exporting ONNX (opset {opset}, tf2onnx)", total=None):
                try:
                    if src.keras_model is not None:
                        x = np.zeros((1, src.height, src.width, 3), np.float32)
                        src.keras_model(x, training=False)  # export needs a called model
                        src.keras_model.export(str(path), format="onnx", opset_version=opset, verbose=False)
                    else:
                        _saved_model_to_onnx(src.saved_model, path, opset)
                except Exception as exc:
                    raise ConversionFailed(
                        f"ONNX export of {src.spec} failed (tf2onnx, opset {opset}): {first_line(exc)}"
                    ) from None
            self.onnx_exporter[opset] = f"tf2onnx {getattr(frameworks.tf2onnx(), '__version__', '')}".strip()
            self._onnx[opset] = path
        return self._onnx[opset]

    def _own_onnx(self, path: Path, opset: int) -> bool:
        """xception_edge.onnx_export's export, checked against Keras on two fixed images in the
        preprocessed range; False (nothing left behind) where it does not cover the model."""
        from . import onnx_export

        src = self.source
        bad = onnx_export.unsupported_layers(src.keras_model)
        if bad:
            console.info(f"ONNX export through tf2onnx: the ONNX writer does not cover {', '.join(bad[:3])}")
            return False
        images = np.random.default_rng(0).uniform(-1.0, 1.0, (2, src.height, src.width, 3)).astype(np.float32)
        with console.progress(f"Exporting ONNX (opset {opset})", total=None):
            try:
                onnx_export.export(src.keras_model, path, opset)
                diff = onnx_export.check(src.keras_model, path, images)
            except Exception as exc:  # Unsupported, or onnx's checker / ONNX Runtime refusing the graph
                path.unlink(missing_ok=True)
                console.warn(f"ONNX writer: {first_line(exc)}; exporting through tf2onnx instead")
                return False
        self.onnx_exporter[opset] = f"{onnx_export.TOOL} (max |Δ| vs Keras {diff:.1g})"
        return True


def _saved_model_to_onnx(loaded, path: Path, opset: int) -> None:
    """tf2onnx on a SavedModel's serving_default signature (load_source checked: one input, one output)."""
    tf = frameworks.tensorflow()
    tf2onnx = frameworks.tf2onnx()
    from keras.src.export.tf2onnx_lib import patch_tf2onnx  # what Keras's ONNX export applies: tf2onnx 1.17 under numpy 2

    patch_tf2onnx()
    sig = loaded.signatures["serving_default"]
    ((in_name, in_spec),) = sig.structured_input_signature[1].items()
    ((out_name, _),) = sig.structured_outputs.items()
    spec = tf.TensorSpec(in_spec.shape, tf.float32, name=in_name)
    fn = tf.function(lambda x: sig(**{in_name: x})[out_name], input_signature=[spec])
    tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset, output_path=str(path))
