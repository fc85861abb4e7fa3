from xception_edge.backends.onnxruntime.convert import convert  # noqa: F401  the same ONNX export and QDQ quantizer
