"""Peak memory of a conversion (#13): `convert --target all` of the small model, run as a child
process and measured with wait4 (ru_maxrss: its largest process, helpers included), stays under a
bound derived from the model: what the same Python needs to import the frameworks and load the
model (measured here, in another child, so the bound follows the machine and the versions), plus
512 MB and 40 times the model file. Not a timed test: time does not enter it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BASELINE = """
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow, keras, openvino, nncf, onnx, onnxruntime
from ai_edge_litert.interpreter import Interpreter
model = keras.models.load_model({path!r}, compile=False)
model(np.zeros((1, 71, 71, 3), "float32"), training=False)
"""


def peak_mb(cmd: list[str], cwd: Path) -> float:
    """Peak RSS (MB) of ``cmd``'s process tree, from wait4; it must succeed."""
    with open(cwd / "child.log", "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        _, status, usage = os.wait4(p.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, (cwd / "child.log").read_text()[-2000:]
    return usage.ru_maxrss / 1024


def test_convert_all_peak_rss_is_bounded_by_the_model(small_model, tmp_path):
    path, train, val = small_model
    baseline = peak_mb([sys.executable, "-c", BASELINE.format(path=str(path))], tmp_path)
    cli = [sys.executable, "-m", "xception_edge", "-q", "convert", "--model", str(path), "--target", "all"]
    cli += ["--calibration", str(train), "--num-calibration", "60", "--verify-data", str(val), "--out", str(tmp_path / "out")]
    converted = peak_mb(cli, tmp_path)
    bound = baseline + 512 + 40 * path.stat().st_size / 2**20
    print(f"\nconvert --target all: peak {converted:.0f} MB; frameworks + model {baseline:.0f} MB; bound {bound:.0f} MB")
    assert len(list((tmp_path / "out").glob("*/manifest.json"))) >= 10
    assert converted <= bound, f"convert --target all peaked at {converted:.0f} MB, over the bound {bound:.0f} MB"
