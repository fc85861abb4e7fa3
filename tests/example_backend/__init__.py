"""A fourth backend for the tests: ONNX Runtime under another name. It proves that a backend is
one package plus one registry line (here `backends.register("example_backend")`): nothing else
in xception_edge names it, yet convert, the runtime, bench, evaluate and inspect all find it."""

from xception_edge.backends import BackendSpec
from xception_edge.backends.onnxruntime import check_profile

SPEC = BackendSpec(
    name="example-ort",
    formats=("onnx",),
    precisions=("fp32", "int8"),
    extra="onnxruntime",
    tools=("onnxruntime",),
    colour="#8c564b",
    float_io_only=True,
    check_profile=check_profile,
)
