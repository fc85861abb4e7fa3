from xception_edge.backends.onnxruntime.runtime import OnnxRuntimeRuntime


class ExampleRuntime(OnnxRuntimeRuntime):
    backend = "example-ort"


RUNTIME = ExampleRuntime
