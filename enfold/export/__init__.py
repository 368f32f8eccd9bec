"""Export: classifier, encoder, energy and the unrolled K-step restorer to TorchScript, ONNX and
TensorRT, with metadata and validation against PyTorch."""
