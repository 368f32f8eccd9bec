"""ONNX Runtime sessions that never fall back to the CPU silently."""

from __future__ import annotations

from pathlib import Path

from enfold.errors import EnfoldError

# short name -> execution providers, the asked-for one first
PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                          "CPUExecutionProvider"]}
ORT_PROVIDERS = ("tensorrt", "cuda", "cpu")


def import_onnxruntime():
    """The ``onnxruntime`` module, or a clear error naming what to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EnfoldError("the onnxruntime backend needs onnxruntime: pip install "
                          "'enfold[cpu]' (or 'enfold[gpu]' for onnxruntime-gpu; never both)"
                          ) from exc
    return onnxruntime


def make_session(path: str | Path, device: str = "cpu"):
    """An ``InferenceSession`` whose first provider is the one asked for, or a clear error."""
    ort = import_onnxruntime()
    if device not in PROVIDERS:
        raise EnfoldError(f"unknown device {device!r}; use one of {sorted(PROVIDERS)}")
    wanted = PROVIDERS[device][0]
    if wanted not in ort.get_available_providers():
        raise EnfoldError(f"{wanted} is not available in this onnxruntime "
                          f"({ort.get_available_providers()}); install onnxruntime-gpu alone "
                          "(with onnxruntime beside it the CUDA provider disappears)")
    try:
        session = ort.InferenceSession(str(path), providers=PROVIDERS[device])
    except Exception as exc:  # InvalidProtobuf, InvalidGraph, NoSuchFile, Fail, ...
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise EnfoldError(f"ONNX Runtime cannot load {path} ({why}); the file is damaged or "
                          "not an ONNX model: export it again (enfold export ... --format onnx)"
                          ) from exc
    if session.get_providers()[0] != wanted:  # the provider failed to load: no silent fallback
        raise EnfoldError(f"{wanted} failed to load for {path}; got {session.get_providers()}")
    return session


def ort_providers_available() -> list[str]:
    """Short names of the execution providers this onnxruntime build offers."""
    try:
        ort = import_onnxruntime()
    except EnfoldError:
        return []
    names = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda",
             "CPUExecutionProvider": "cpu"}
    return [names[p] for p in ort.get_available_providers() if p in names]
