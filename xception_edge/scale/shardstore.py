"""REPORT/shards/: one file per finished shard of `evaluate --executor ray`, the run's checkpoint.

``NNNNN-<key16>.npz``: each model's image indices, top-k classes and probabilities, plus a JSON
``meta`` record (key, shard, undecodable images, the node that computed it). The key covers what
decides a shard's content, so a changed input never reuses a stale one. Files are written
through a temporary file renamed into place, and read back as untrusted input (numpy without
pickle): one that is not the shape this module writes is warned about and computed again."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import console, interrupts
from ..artifact import TMP_PREFIX

SHARDS = "shards"


class ShardStore:
    def __init__(self, folder: Path, *, resume: bool, names: list[str], num_classes: int):
        self.folder = Path(folder)
        self.resume = resume
        self.names = names  # the models every shard holds, in order
        self.num_classes = num_classes
        self.used: set[Path] = set()
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f"{TMP_PREFIX}*"):  # a killed run's half-written file (we hold the lock)
            stale.unlink(missing_ok=True)

    def path(self, index: int, key: str) -> Path:
        return self.folder / f"{index:05d}-{key[:16]}.npz"

    def save(self, key: str, result: dict) -> None:
        path = self.path(result["index"], key)
        meta = {k: result[k] for k in ("index", "start", "count", "model_sha256", "node_id", "ip", "seconds", "load_seconds")}
        meta |= {"key": key, "names": self.names, "failed": {str(i): why for i, why in result["failed"].items()}}
        arrays = {"meta": np.array(json.dumps(meta))}
        for j, name in enumerate(self.names):
            arrays |= {f"{part}{j}": result["predictions"][name][part] for part in ("idx", "top", "p")}
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".npz", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            interrupts.check()
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.used.add(path)

    def load(self, index: int, key: str, start: int, count: int) -> dict | None:
        """The finished shard (as ``worker.run_shard`` returns it), or None: not resuming, none
        stored, or unusable (warned)."""
        path = self.path(index, key)
        if not self.resume or not path.is_file():
            return None
        try:
            result = self._read(path, key, start, count)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            console.warn(f"{path} is not a usable shard ({str(exc) or type(exc).__name__}); computing it again")
            return None
        self.used.add(path)
        return result

    def _read(self, path: Path, key: str, start: int, count: int) -> dict:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if not isinstance(meta, dict) or meta.get("key") != key or meta.get("names") != self.names:
                raise ValueError("another key or other models")
            if (meta.get("index"), meta.get("start"), meta.get("count")) != (int(path.name[:5]), start, count):
                raise ValueError("another range of images")
            failed = {int(i): str(why) for i, why in dict(meta["failed"]).items()}
            predictions = {name: {part: z[f"{part}{j}"] for part in ("idx", "top", "p")} for j, name in enumerate(self.names)}
        expected = np.array([i for i in range(start, start + count) if i not in failed], dtype=np.int64)
        for pred in predictions.values():
            _check_prediction(pred, expected, self.num_classes)
        return {**meta, "failed": failed, "predictions": predictions}

    def prune(self) -> None:
        """Drop the shards of earlier runs that this report does not use."""
        for p in self.folder.glob("*.npz"):
            if p not in self.used:
                p.unlink(missing_ok=True)


def _check_prediction(pred: dict, expected: np.ndarray, num_classes: int) -> None:
    idx, top, p = pred["idx"], pred["top"], pred["p"]
    if idx.dtype != np.int64 or not np.array_equal(idx, expected):
        raise ValueError("its images are not the shard's decodable images")
    k = min(5, num_classes)
    if top.shape != (len(idx), k) or p.shape != (len(idx), k) or top.dtype != np.int32 or p.dtype != np.float32:
        raise ValueError("its top-k arrays have another shape or type")
    if len(idx) and (top.min() < 0 or top.max() >= num_classes):
        raise ValueError("a class index out of range")


def dense(pred: dict, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(image indices, probabilities) with the top-k classes' probabilities in place and -inf
    elsewhere: the same top-1, top-5 and ties as the full outputs."""
    probs = np.full((len(pred["idx"]), num_classes), -np.inf, dtype=np.float32)
    np.put_along_axis(probs, pred["top"].astype(np.int64), pred["p"], -1)
    return pred["idx"], probs
