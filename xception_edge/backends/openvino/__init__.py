"""OpenVINO: openvino.convert_model and NNCF on the build host, the CPU plugin on the device."""

from .. import BackendSpec


def check_profile(p, path) -> None:
    from ...errors import BadInput

    if p.input_dtype.value != "float32" or p.output_dtype.value != "float32":
        raise BadInput(f"{path}: OpenVINO IRs keep float32 input and output (int8 sits inside); remove input_dtype/output_dtype")


SPEC = BackendSpec(
    name="openvino",
    formats=("openvino-ir",),
    precisions=("fp32", "fp16", "int8"),
    extra="openvino",
    tools=("tensorflow", "keras", "openvino", "nncf"),
    device_requires=("openvino",),
    emulated_versions=(("openvino", "2026.4.1"),),
    colour="#9467bd",
    native_bench=True,
    float_io_only=True,
    accuracy_control=True,
    check_profile=check_profile,
    settings=("disable_bias_correction", "activations_range"),
    calibration_setting="activations_range",  # NNCF's activation range estimator
    calibration_methods=("minmax", "mean_minmax", "histogram"),
    convert_requires=(("tensorflow", "convert"), ("keras", "convert"), ("openvino", "openvino")),
    quantize_requires=(("nncf", "convert"),),
    native_scope=r".*/.*|[A-Z][A-Za-z0-9]*_\d+",
    native_names="OpenVINO op names",
    scope_kinds=("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense"),
)
