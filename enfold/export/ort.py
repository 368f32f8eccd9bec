"""ONNX Runtime sessions that never fall back to the CPU silently."""

from __future__ import annotations

from pathlib import Path

from enfold.errors import EnfoldError

PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                          "CPUExecutionProvider"]}


def make_session(path: str | Path, device: str = "cpu"):
    """An ``InferenceSession`` whose first provider is the one asked for, or a clear error."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EnfoldError("onnxruntime is not installed: pip install 'enfold[cpu]' (or "
                          "'enfold[gpu]' for onnxruntime-gpu; never both)") from exc
    if device not in PROVIDERS:
        raise EnfoldError(f"unknown device {device!r}; use one of {sorted(PROVIDERS)}")
    wanted = PROVIDERS[device][0]
    if wanted not in ort.get_available_providers():
        raise EnfoldError(f"{wanted} is not available in this onnxruntime "
                          f"({ort.get_available_providers()}); install onnxruntime-gpu alone "
                          "(with onnxruntime beside it the CUDA provider disappears)")
    session = ort.InferenceSession(str(path), providers=PROVIDERS[device])
    if session.get_providers()[0] != wanted:  # the provider failed to load: no silent fallback
        raise EnfoldError(f"{wanted} failed to load for {path}; got {session.get_providers()}")
    return session
