"""The runnable artifact formats, their file suffixes and the backend that runs each."""

from __future__ import annotations

# format -> file suffix of the artifact
SUFFIX = {"torchscript": ".ts", "onnx": ".onnx", "tensorrt": ".engine"}
FORMATS = tuple(SUFFIX)
# backend -> the artifact format it runs; the torch backend runs the checkpoint itself
BACKEND_FORMAT = {"torchscript": "torchscript", "onnxruntime": "onnx", "tensorrt": "tensorrt"}
# format -> the backend that runs it
FORMAT_BACKEND = {fmt: backend for backend, fmt in BACKEND_FORMAT.items()}
BACKENDS = ("torch", *BACKEND_FORMAT)
