"""One share of a TFLite calibration, in its own process: TFLite's calibration wrapper alone
(the 16 MB extension module TFLiteConverter itself uses, loaded from its file without importing
TensorFlow) fed the share's images; the calibrated model (min/max per tensor) is written to OUT.

Run as a script (``python -P calibrate_worker.py WRAPPER_SO MODEL IMAGES_NPY OUT``) by
``calibrate.py``: it prints one line per image fed, for the parent's progress bar.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np


def _wrapper(so: str):
    spec = importlib.util.spec_from_file_location("_pywrap_tensorflow_lite_calibration_wrapper", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibrate(so: str, model: str, images: str, out: str) -> None:
    with open(model, "rb") as f:
        content = f.read()  # kept referenced: the wrapper reads the model from this buffer
    wrapper = _wrapper(so).CalibrationWrapper(content, [], [])
    x = np.load(images, mmap_mode="r")
    wrapper.Prepare([[1, *x.shape[1:]]])
    for i in range(len(x)):
        wrapper.FeedTensor([np.ascontiguousarray(x[i : i + 1])])
        print(i + 1, flush=True)
    with open(out + ".part", "wb") as f:
        f.write(wrapper.Calibrate())
    os.replace(out + ".part", out)


if __name__ == "__main__":
    try:
        calibrate(*sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)
