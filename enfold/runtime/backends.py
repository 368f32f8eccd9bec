"""The four inference backends, each a callable on normalised ``(B, C, H, W)`` float32 batches.

* ``torch``: PyTorch eager on the checkpoint (the reference every export is validated against);
* ``torchscript``: ``torch.jit.load`` of a ``.ts`` artifact (CPU or CUDA);
* ``onnxruntime``: an ``.onnx`` artifact on the TensorRT, CUDA or CPU execution provider;
* ``tensorrt``: a deserialized ``.engine``, device buffers, asynchronous execution on a stream.

Backends return CPU float32 tensors. Optional libraries are imported when a backend is built.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from enfold.errors import EnfoldError

BACKENDS = ("torch", "torchscript", "onnxruntime", "tensorrt")
# Which artifact format each backend runs; torch runs the checkpoint itself.
FORMAT_OF = {"torchscript": "torchscript", "onnxruntime": "onnx", "tensorrt": "tensorrt"}
SUFFIX_OF = {"torchscript": ".ts", "onnx": ".onnx", "tensorrt": ".engine"}
ORT_PROVIDERS = ("tensorrt", "cuda", "cpu")


class Backend(ABC):
    """A loaded model for one target; ``__call__`` maps a normalised batch to its output."""

    name: str = ""
    device: str = "cpu"
    detail: str = ""  # e.g. the execution provider
    fixed_batch: int | None = None  # the only batch size the artifact accepts
    batch_range: tuple[int, int] | None = None  # (min, max) batch the artifact accepts

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalised float32 -> the target's output, on the CPU."""

    def describe(self) -> str:
        extra = f", {self.detail}" if self.detail else ""
        return f"{self.name} ({self.device}{extra})"


class TorchBackend(Backend):
    """PyTorch eager: the checkpoint's model, rebuilt exactly as export validation does."""

    name = "torch"

    def __init__(self, checkpoint: str | Path, target: str, device: str,
                 steps: int | None = None, task: str | None = None) -> None:
        from enfold.export.graphs import build_spec

        if device == "cuda" and not torch.cuda.is_available():
            raise EnfoldError("--device cuda: no CUDA GPU is visible to PyTorch "
                              "(torch.cuda.is_available() is False); use --device cpu")
        # trace=False: the restorer runs model.restore itself (autograd input gradients)
        self.spec = build_spec(str(checkpoint), target, steps, task, trace=False)
        self.module = self.spec.module.to(device)
        self.device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the restorer's input gradient comes from torch.func.grad inside
            return self.module(x.to(self.device)).float().cpu()


class TorchScriptBackend(Backend):
    name = "torchscript"

    def __init__(self, path: Path, meta: dict[str, Any], device: str) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise EnfoldError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice, not the user's
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(str(path), map_location=device).eval()
        self.device = device
        self.fixed_batch = meta.get("fixed_batch")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x.to(self.device)).float().cpu()


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise EnfoldError("the onnxruntime backend needs onnxruntime: pip install "
                          "'enfold[cpu]' (or 'enfold[gpu]' for onnxruntime-gpu; never both)"
                          ) from exc
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on one execution provider, checked after the session is built."""

    name = "onnxruntime"

    def __init__(self, path: Path, provider: str) -> None:
        from enfold.export.ort import make_session

        import_onnxruntime()
        if provider not in ORT_PROVIDERS:
            raise EnfoldError(f"unknown onnxruntime provider {provider!r}; use one of "
                              f"{', '.join(ORT_PROVIDERS)}")
        self.session = make_session(path, provider)  # raises rather than falling back to CPU
        self.input_name = self.session.get_inputs()[0].name
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.detail = self.session.get_providers()[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out).float()


class TensorRTBackend(Backend):
    """A TensorRT engine run on torch-allocated device buffers and a CUDA stream."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        from enfold.export.tensorrt_build import TensorRTRunner

        self.runner = TensorRTRunner(path)
        lo, _, hi = meta.get("batch_profile", [1, 1, 1])
        self.batch_range = (int(lo), int(hi))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x).float().cpu()


def ort_providers_available() -> list[str]:
    """Short names of the execution providers this onnxruntime build offers."""
    try:
        ort = import_onnxruntime()
    except EnfoldError:
        return []
    names = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda",
             "CPUExecutionProvider": "cpu"}
    return [names[p] for p in ort.get_available_providers() if p in names]


def backend_status() -> dict[str, str]:
    """For each backend: "available" or the reason it is not (for ``enfold bench`` and docs)."""
    status = {"torch": "available", "torchscript": "available"}
    providers = ort_providers_available()
    status["onnxruntime"] = (f"available ({', '.join(providers)})" if providers else
                             "not installed: pip install 'enfold[cpu]' or 'enfold[gpu]'")
    try:
        from enfold.export.tensorrt_build import import_tensorrt, require_gpu

        import_tensorrt()
        require_gpu()
        status["tensorrt"] = "available"
    except EnfoldError as exc:
        status["tensorrt"] = str(exc)
    return status
