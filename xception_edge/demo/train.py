"""Train the demo model on the synthetic dataset, through the toolkit's own preprocessing."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import console
from ..errors import BadInput
from ..preprocess import PreprocessSpec, list_images, load_images
from .data import CLASS_NAMES


def load_split(data_root: Path, split: str, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``data_root/split/<class>/`` preprocessed by ``load_images``, with integer labels."""
    paths = list_images(Path(data_root) / split)
    if not paths:
        raise BadInput(f"no images under {Path(data_root) / split}; rebuild the demo dataset")
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    unknown = sorted({p.parent.name for p in paths} - set(index))
    if unknown:
        raise BadInput(f"{Path(data_root) / split} has folders that are not demo classes: {unknown}")
    labels = np.array([index[p.parent.name] for p in paths], dtype=np.int64)
    with console.progress(f"loading {split} images", len(paths)) as task:
        x, failed = load_images(paths, spec, on_progress=lambda done: task.update(done))
    if failed:
        raise BadInput(f"{len(failed)} demo image(s) failed to decode, e.g. {failed[0]}; delete the demo cache")
    return x, labels


def _save_atomically(model, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".keras", dir=out_path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _top1(model, x: np.ndarray, y: np.ndarray) -> float:
    probs = model.predict(x, batch_size=128, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == y))


def _epoch_logger(keras, epochs: int):
    """A callback that prints one line per epoch (loss, train and val accuracy, seconds)."""

    class _EpochLine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            console.info(
                f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.3f}, "
                f"train acc {logs.get('accuracy', float('nan')):.3f}, "
                f"val acc {logs.get('val_accuracy', float('nan')):.3f} "
                f"({time.perf_counter() - self.start:.1f}s)"
            )

    return _EpochLine()


def _compiled_model(keras, input_size: int, width: int, middle_blocks: int, steps: int, learning_rate: float):
    """The compact Xception, compiled with Adam on a cosine-decaying learning rate."""
    from .model import build_compact_xception

    model = build_compact_xception(input_size, len(CLASS_NAMES), width, middle_blocks)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,  # XLA is many times slower for this model on CPU
    )
    return model


def train_demo_model(
    data_root: Path,
    out_path: Path,
    *,
    seed: int = 0,
    epochs: int = 10,
    input_size: int = 80,
    width: int = 8,
    middle_blocks: int = 4,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
) -> dict:
    """Train a compact Xception on ``data_root/{train,val,val_hard}``; save it to ``out_path`` (.keras).

    Returns stats: val/val_hard/train top-1, parameter count, image counts, seconds.
    Seeded with ``keras.utils.set_random_seed`` (repeatable up to float reduction order).
    """
    import keras

    spec = PreprocessSpec(input_size, input_size)
    t0 = time.perf_counter()
    x_train, y_train = load_split(data_root, "train", spec)
    x_val, y_val = load_split(data_root, "val", spec)
    x_hard, y_hard = load_split(data_root, "val_hard", spec)
    load_seconds = time.perf_counter() - t0

    keras.utils.set_random_seed(seed)
    steps = epochs * -(-len(x_train) // batch_size)
    model = _compiled_model(keras, input_size, width, middle_blocks, steps, learning_rate)
    console.info(
        f"training demo model: {model.count_params():,} parameters, {len(x_train)} images, "
        f"{epochs} epochs at {input_size}x{input_size}"
    )
    t1 = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
        validation_data=(x_val, y_val), callbacks=[_epoch_logger(keras, epochs)], verbose=0,
    )  # fmt: skip
    train_seconds = time.perf_counter() - t1
    stats = {
        "val_top1": _top1(model, x_val, y_val),
        "val_hard_top1": _top1(model, x_hard, y_hard),
        "train_top1": float(history.history["accuracy"][-1]),
        "params": int(model.count_params()),
        "input_size": input_size,
        "epochs": epochs,
        "seed": seed,
        "num_train": int(len(x_train)),
        "num_val": int(len(x_val)),
        "num_val_hard": int(len(x_hard)),
        "load_seconds": round(load_seconds, 2),
        "train_seconds": round(train_seconds, 2),
    }
    _save_atomically(model, Path(out_path))
    return stats
