"""Decode and preprocess images in background threads into one preallocated array, while the
caller consumes them in order (numpy + Pillow only).

Pillow's decoders and numpy's resize arithmetic release the GIL, so a worker thread decodes
image i+1.. while the caller's model runs on image i. ``workers=0`` decodes in the caller's
thread instead (serial: decode, then infer), for measuring what the overlap buys.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from collections.abc import Iterator, Sequence

import numpy as np

from .preprocess import PreprocessSpec, UndecodableImage, load_image


class ImageFeed:
    """``feed.x[i]`` holds image i once ``feed.wait(i + 1)`` returned; ``feed.failed[i]`` the
    reason image i could not be decoded (it is then left out of every batch)."""

    def __init__(self, files: Sequence[str | Path], spec: PreprocessSpec, *, workers: int = 1):
        self.files = list(files)
        self.spec = spec
        self.workers = max(0, int(workers))
        n = len(self.files)
        self.x = np.empty((n, spec.height, spec.width, 3), dtype=np.float32)
        self.failed: dict[int, str] = {}
        self.decode_seconds = 0.0  # wall time inside load_image, summed over workers
        self.decode_cpu_seconds = 0.0  # CPU time of it (thread time): what decoding costs
        self.wait_seconds = 0.0  # how long the consumer waited for images
        self._done = np.zeros(n, dtype=bool)
        self._ready = 0  # images 0.._ready-1 are done
        self._next = 0  # next index a worker takes
        self._cond = threading.Condition()
        self._stop = False
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._work, name=f"xe-decode-{i}", daemon=True) for i in range(self.workers)]

    def __enter__(self) -> ImageFeed:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, i: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            self.x[i] = load_image(self.files[i], self.spec)
        except UndecodableImage as exc:
            self.failed[i] = str(exc)
        return time.perf_counter() - t0, time.thread_time() - c0

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stop or self._next >= len(self.files):
                        return
                    i = self._next
                    self._next += 1
                took, cpu = self._decode(i)
                with self._cond:
                    self.decode_seconds += took
                    self.decode_cpu_seconds += cpu
                    self._done[i] = True
                    while self._ready < len(self.files) and self._done[self._ready]:
                        self._ready += 1
                    self._cond.notify_all()
        except BaseException as exc:  # surfaced to the consumer by wait()
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def wait(self, n: int) -> None:
        """Block until images 0..n-1 are decoded (or failed)."""
        n = min(n, len(self.files))
        t0 = time.perf_counter()
        if not self._threads:
            while self._ready < n:
                took, cpu = self._decode(self._ready)
                self.decode_seconds += took
                self.decode_cpu_seconds += cpu
                self._ready += 1
            self.wait_seconds += time.perf_counter() - t0
            return
        with self._cond:
            while self._ready < n and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
        self.wait_seconds += time.perf_counter() - t0

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, images) of the decodable images, in order, ``size`` at a time, each batch
        as soon as its images are decoded."""
        for start in range(0, len(self.files), size):
            end = min(start + size, len(self.files))
            self.wait(end)
            idx = np.array([i for i in range(start, end) if i not in self.failed], dtype=np.int64)
            if len(idx):
                yield idx, self.x[idx]

    @property
    def decoded(self) -> np.ndarray:
        """Indices of the images that decoded (call after wait(len(feed)))."""
        return np.array([i for i in range(len(self.files)) if i not in self.failed], dtype=np.int64)
