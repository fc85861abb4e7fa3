from xception_edge.backends.onnxruntime.inspect import measure  # noqa: F401

TOOL = "the example backend (ONNX Runtime's qdq_loss_debug)"
