"""Benchmark (not a test): NNCF's options for x86-openvino-int8 on the demo model, for choosing the
profile's settings. The CLE-transformed demo model (the profile's transform) is converted to
OpenVINO once, then quantized by nncf.quantize with each variant of the settings on the same 300
calibration images; each variant's top-1 agreement with Keras and top-1 on the split are printed.

    .venv/bin/python bench/nncf_options.py                       # every variant, val_hard
    .venv/bin/python bench/nncf_options.py --split val nobc_minmax defaults
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import accuracy_table  # noqa: E402

# variant -> (transforms of the Keras model, nncf settings)
VARIANTS = {
    "defaults": (["cle"], {}),
    "minmax": (["cle"], {"act": "MINMAX"}),
    "mixed": (["cle"], {"preset": "mixed"}),
    "full_bc": (["cle"], {"fast": False}),
    "first_layer": (["cle"], {"overflow_fix": "first_layer_only"}),
    "mean_quantile": (["cle"], {"act": "MEAN_QUANTILE"}),
    "histogram": (["cle"], {"act": "HISTOGRAM"}),
    "nobc": (["cle"], {"bc": False}),
    "nobc_minmax": (["cle"], {"bc": False, "act": "MINMAX"}),
    "nobc_minmax_nocle": ([], {"bc": False, "act": "MINMAX"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", default=list(VARIANTS), help=f"some of: {', '.join(VARIANTS)}")
    ap.add_argument("--split", default="val_hard", choices=["val", "val_hard"])
    args = ap.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from xception_edge import transforms
    from xception_edge.hostinfo import host

    accuracy_table.SPLIT = args.split
    work = HERE / "out" / "nncf_options"
    work.mkdir(parents=True, exist_ok=True)
    s, model = accuracy_table.setup(work)
    calib = s.calib.astype(np.float32)
    keras_top = np.array([s.labels.index(s.keras_preds[k]) for k in s.data.keys])
    targets = np.array(s.data.targets)
    h, w = s.images.shape[1:3]
    sources = {}
    print(f"host: {host()['cpu']}, int8 flags {host()['int8_flags']}; {args.split}: {len(s.images)} images", flush=True)
    for name in args.variants:
        names, o = VARIANTS[name]
        key = "+".join(names) or "none"
        if key not in sources:
            m = transforms.apply(model, names, calib, verify_images=s.images[:64])[0] if names else model
            m.export(str(work / f"saved_model_{key}"), verbose=False)
            sources[key] = ov.convert_model(str(work / f"saved_model_{key}"), input=[1, h, w, 3])
        act = o.get("act")
        advanced = AdvancedQuantizationParameters(
            weights_quantization_params=QuantizationParameters(per_channel=True),
            overflow_fix=OverflowFix(o.get("overflow_fix", "enable")),
            activations_range_estimator_params=getattr(RangeEstimatorParametersSet, act) if act else None,
            disable_bias_correction=not o.get("bc", True),
        )
        t0 = time.perf_counter()
        q = nncf.quantize(
            sources[key].clone(),
            nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
            preset=nncf.QuantizationPreset(o.get("preset", "performance")),
            subset_size=len(calib),
            fast_bias_correction=o.get("fast", True),
            advanced_parameters=advanced,
        )
        c = ov.Core().compile_model(q, "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"})
        preds = np.array([c(s.images[i : i + 1])[0].argmax() for i in range(len(s.images))])
        row = {
            "variant": name,
            "agreement": round(float((preds == keras_top).mean()) * 100, 2),
            "top1": round(float((preds == targets).mean()) * 100, 2),
            "keras_top1": round(s.keras_top1 * 100, 2),
            "quantize_s": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
