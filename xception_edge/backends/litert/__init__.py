"""LiteRT (TensorFlow Lite): TFLiteConverter on the build host, the LiteRT interpreter on the device."""

from .. import BackendSpec

SPEC = BackendSpec(
    name="litert",
    formats=("tflite",),
    precisions=("fp32", "fp16", "dynamic-int8", "int8"),
    extra="device",
    tools=("tensorflow", "keras", "ai-edge-litert", "tflite-runtime"),
    device_requires=("ai-edge-litert",),
    emulated_versions=(("ai-edge-litert", "2.3.0"),),
    colour="#1f77b4",
    native_bench=True,
    # TFLite's calibrator records each tensor's min and max; the other methods' ranges come from
    # the run's ONNX export (percentile ours, entropy ONNX Runtime's calibrator), written into
    # TFLite's calibrated model (shared_ranges.py)
    settings=("calibration_method", "calibration_percentile"),
    calibration_setting="calibration_method",
    calibration_methods=("minmax", "entropy", "percentile"),
    convert_requires=(("tensorflow", "convert"), ("keras", "convert")),
    native_scope=r".*[/;].*",
    native_names="TFLite tensor names",
)
