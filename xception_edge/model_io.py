"""The source model (`--model`): a .keras or .h5 file, a SavedModel folder, or keras:xception.

Everything here imports TensorFlow/Keras inside functions: it is the build-host side only.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from . import frameworks
from .errors import BadInput, first_line

KERAS_XCEPTION = "keras:xception"
MIN_SIZE = 71


@dataclasses.dataclass(frozen=True)
class KerasXceptionOptions:
    """Options for the stock keras.applications.Xception (`--model keras:xception`)."""

    weights: str = "imagenet"  # "imagenet" (downloads, needs the internet) or "none"
    input_size: int = 299
    num_classes: int = 1000


@dataclasses.dataclass
class SourceModel:
    spec: str
    kind: str  # keras | h5 | saved_model | keras-applications
    sha256: str
    height: int
    width: int
    num_classes: int
    keras_model: Any | None  # keras.Model, or None for a raw SavedModel
    _predict_fn: Callable[[np.ndarray], np.ndarray]
    saved_model_dir: Path | None = None  # a SavedModel input's own folder (exports.Exports reuses it)
    saved_model: Any | None = dataclasses.field(default=None, repr=False)  # a SavedModel input, loaded (kept alive)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def predict(self, x: np.ndarray, batch_size: int = 8) -> np.ndarray:
        outs = [np.asarray(self._predict_fn(x[i : i + batch_size]), dtype=np.float32) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.empty((0, self.num_classes), np.float32)


def _hash_path(path: Path) -> str:
    from .calibration import sha256_file

    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def _hash_weights(model) -> str:
    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()


def _load_keras_file(path: Path, unsafe: bool):
    keras = frameworks.keras()
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as exc:
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise BadInput(
                f"{path} contains a Lambda layer (arbitrary Python code), refused in Keras safe mode; "
                "pass --unsafe-model only if you trust this file"
            ) from None
        raise BadInput(f"{path} cannot be loaded as a Keras model: {first_line(exc)}") from None
    except (OSError, TypeError, KeyError, AttributeError) as exc:
        raise BadInput(f"{path} cannot be loaded as a Keras model: {exc.__class__.__name__}: {first_line(exc)}") from None


def _keras_applications(opts: KerasXceptionOptions):
    keras = frameworks.keras()
    check_xception_options(opts)
    if opts.weights == "none":
        keras.utils.set_random_seed(0)  # deterministic random weights, so the sha256 is stable
    try:
        return keras.applications.Xception(
            weights=None if opts.weights == "none" else "imagenet",
            input_shape=(opts.input_size, opts.input_size, 3),
            classes=opts.num_classes,
        )
    except Exception as exc:
        text = first_line(exc, 200)
        if (opts.weights == "imagenet" and isinstance(exc, OSError)) or "fetch" in text.lower() or "url" in text.lower():
            raise BadInput(
                f"cannot download ImageNet weights for keras:xception ({text}); this needs the internet, or use --weights none"
            ) from None
        raise BadInput(f"keras:xception cannot be built with these options: {text}") from None


def check_xception_options(opts: KerasXceptionOptions) -> None:
    """The stock Xception's options, checked before TensorFlow is imported."""
    if opts.weights not in ("imagenet", "none"):
        raise BadInput(f"--weights {opts.weights!r} must be 'imagenet' or 'none'")
    if opts.input_size < MIN_SIZE:
        raise BadInput(f"--input-size {opts.input_size} is too small; Xception needs at least {MIN_SIZE}")
    if opts.input_size > 2048:
        raise BadInput(f"--input-size {opts.input_size} is too large; use at most 2048")
    if opts.num_classes < 2:
        raise BadInput(f"--num-classes {opts.num_classes} must be at least 2 (a classifier's output)")
    if opts.weights == "imagenet" and opts.num_classes != 1000:
        raise BadInput(
            f"--num-classes {opts.num_classes}: ImageNet weights have 1000 classes; fine-tune first, or use --weights none"
        )
    if opts.weights == "imagenet" and opts.input_size != 299:
        raise BadInput(
            f"--input-size {opts.input_size}: the ImageNet weights with their classifier take 299x299 inputs; "
            "use --input-size 299, or --weights none for another size"
        )


def _wrap_saved_model(path: Path):
    tf = frameworks.tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise BadInput(f"{path} is not a loadable TensorFlow SavedModel: {first_line(exc)}") from None
    sig = loaded.signatures.get("serving_default")
    if sig is None:
        raise BadInput(f"{path} has no 'serving_default' signature; export it with model.export()")
    inputs = sig.structured_input_signature[1]
    outputs = sig.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise BadInput(
            f"{path}: expected one image input and one output, found {len(inputs)} input(s) and {len(outputs)} output(s)"
        )
    ((in_name, in_spec),) = inputs.items()
    ((out_name, out_spec),) = outputs.items()
    shape = tuple(in_spec.shape.as_list())
    out_shape = tuple(out_spec.shape.as_list())

    def predict(x):
        return sig(**{in_name: tf.constant(x, dtype=tf.float32)})[out_name].numpy()

    return loaded, predict, shape, out_shape


def _check_shapes(where: str, in_shape: tuple, out_shape: tuple, n_inputs: int = 1, n_outputs: int = 1) -> tuple[int, int, int]:
    if n_inputs != 1:
        raise BadInput(f"{where} has {n_inputs} inputs; xception-edge converts image classifiers with one image input")
    if n_outputs != 1:
        raise BadInput(f"{where} has {n_outputs} outputs; xception-edge needs one classification output")
    if len(in_shape) != 4 or in_shape[-1] != 3:
        raise BadInput(f"{where} input shape {in_shape} is not an image; expected (batch, height, width, 3) NHWC")
    h, w = in_shape[1], in_shape[2]
    if h is None or w is None:
        raise BadInput(f"{where} input size {in_shape} is not fixed; rebuild the model with a fixed input_shape")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise BadInput(f"{where} input size {h}x{w} is below {MIN_SIZE}x{MIN_SIZE}, the smallest Xception input")
    if len(out_shape) != 2 or out_shape[-1] is None or out_shape[-1] < 2:
        raise BadInput(f"{where} output shape {out_shape} is not a classification output (batch, classes)")
    return int(h), int(w), int(out_shape[-1])


def load_source(spec: str, *, unsafe: bool = False, xception: KerasXceptionOptions | None = None) -> SourceModel:
    """Load and check `--model`. One NHWC 3-channel image input of fixed size ≥71, one output."""
    if spec.lower() == KERAS_XCEPTION:
        opts = xception or KerasXceptionOptions()
        model = _keras_applications(opts)
        src = _from_keras(spec, "keras-applications", model, sha256=None)
        return src
    path = Path(spec)
    if not path.exists():
        raise BadInput(f"model {path} does not exist; pass a .keras/.h5 file, a SavedModel folder or keras:xception")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise BadInput(f"{path} is a folder without saved_model.pb; pass a SavedModel folder, a .keras or .h5 file")
        loaded, predict, in_shape, out_shape = _wrap_saved_model(path)
        h, w, c = _check_shapes(str(path), in_shape, out_shape)
        src = SourceModel(spec, "saved_model", _hash_path(path), h, w, c, None, predict, path, loaded)
        src.warnings.append("a SavedModel cannot be checked for Xception's structure")
        return src
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise BadInput(f"model {path} has an unknown extension '{suffix}'; use .keras, .h5 or a SavedModel folder")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise BadInput(f"model {path} cannot be read: {exc.strerror}") from None
    if suffix == ".keras" and head[:4] != b"PK\x03\x04":
        raise BadInput(f"model {path} is not a .keras archive (a zip file); save it with model.save('name.keras')")
    if suffix == ".keras":
        _check_keras_archive(path)
    if suffix != ".keras" and head != b"\x89HDF\r\n\x1a\n":
        raise BadInput(f"model {path} is not an HDF5 file; save it with model.save('name.h5') or use .keras")
    model = _load_keras_file(path, unsafe)
    return _from_keras(spec, "keras" if suffix == ".keras" else "h5", model, sha256=_hash_path(path))


def _check_keras_archive(path: Path) -> None:
    """A .keras file is a zip with config.json; a truncated copy fails here, not as 'File not found'."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BadInput(f"model {path} is a truncated or corrupt .keras archive ({exc}); copy or save it again") from None
    if bad is not None:
        raise BadInput(f"model {path} is a corrupt .keras archive ({bad} fails its CRC check); copy or save it again")
    if "config.json" not in names:
        raise BadInput(
            f"model {path} is a zip file without config.json, not a .keras model; save it with model.save('name.keras')"
        )


def _from_keras(spec: str, kind: str, model, sha256: str | None) -> SourceModel:
    n_in, n_out = len(model.inputs), len(model.outputs)
    in_shape = tuple(model.inputs[0].shape) if n_in else ()
    out_shape = tuple(model.outputs[0].shape) if n_out else ()
    h, w, c = _check_shapes(spec, in_shape, out_shape, n_in, n_out)
    src = SourceModel(spec, kind, sha256 or _hash_weights(model), h, w, c, model, lambda x: model(x, training=False))
    if not looks_like_xception(model):
        src.warnings.append(
            f"{spec} does not look like an Xception (no separable-convolution residual blocks); converting anyway, "
            "but xception-edge's defaults are tuned for Xception"
        )
    return src


def looks_like_xception(model) -> bool:
    kinds = [layer.__class__.__name__ for layer in _all_layers(model)]
    return kinds.count("SeparableConv2D") >= 4 and "Add" in kinds


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def read_labels(path: Path) -> list[str]:
    try:
        lines = [l.strip() for l in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--labels {path} cannot be read: {exc}") from None
    labels = [l for l in lines if l]
    if not labels:
        raise BadInput(f"--labels {path} is empty; write one class name per line")
    if len(set(labels)) != len(labels):
        dup = sorted({l for l in labels if labels.count(l) > 1})
        raise BadInput(f"--labels {path} names classes twice: {', '.join(dup[:5])}")
    return labels


def resolve_labels(
    num_classes: int, labels_file: Path | None, folder_classes: tuple[str, ...] | None, folder: str | None
) -> tuple[list[str], str]:
    """Class names from --labels, else the calibration folder's class sub-folders (sorted, as
    Keras orders them), else generic names. The count must match the model's outputs."""
    if labels_file is not None:
        labels = read_labels(labels_file)
        if len(labels) != num_classes:
            raise BadInput(f"--labels {labels_file} has {len(labels)} classes but the model outputs {num_classes}")
        return labels, str(labels_file)
    if folder_classes is not None:
        if len(folder_classes) != num_classes:
            raise BadInput(
                f"{folder} has {len(folder_classes)} class folders but the model outputs {num_classes} classes; "
                "pass --labels FILE with one name per output"
            )
        return list(folder_classes), f"class folders of {folder}"
    return [f"class_{i}" for i in range(num_classes)], "generic (no --labels, no class folders)"
