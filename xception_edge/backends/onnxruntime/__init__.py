"""ONNX Runtime: the toolkit's ONNX writer (tf2onnx for what it does not cover) and ORT's static QDQ quantizer on the build host,
an InferenceSession on the device."""

from .. import BackendSpec


def check_profile(p, path) -> None:
    from ...errors import BadInput

    if p.input_dtype.value != "float32" or p.output_dtype.value != "float32":
        raise BadInput(f"{path}: onnxruntime int8 (QDQ) keeps float32 input and output; remove input_dtype/output_dtype")
    q = p.quantization
    if q.activation_dtype == "int8" and q.weight_dtype == "uint8":
        raise BadInput(
            f'{path}: ONNX Runtime has no int8-activation x uint8-weight kernels; set [quantization] weight_dtype = "int8"'
        )


SPEC = BackendSpec(
    name="onnxruntime",
    formats=("onnx",),
    precisions=("fp32", "int8"),
    extra="onnxruntime",
    tools=("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"),
    device_requires=("onnxruntime",),
    emulated_versions=(("onnxruntime", "1.32.0"),),
    colour="#2ca02c",
    float_io_only=True,
    check_profile=check_profile,
    settings=("x86_without_vnni", "calibration_method", "calibration_percentile"),
    calibration_setting="calibration_method",  # ORT's CalibrationMethod MinMax / Entropy / Percentile
    calibration_methods=("minmax", "entropy", "percentile"),
    convert_requires=(
        ("tensorflow", "convert"),
        ("keras", "convert"),
        ("tf2onnx", "convert"),
        ("onnx", "convert"),
        ("onnxruntime", "convert"),
    ),
    quantize_requires=(("sympy", "convert"),),
)
