"""One runner per backend, each a callable on normalised ``(B, C, H, W)`` float32 batches.

* ``torch``: PyTorch eager on the checkpoint (the reference every export is validated against);
* ``torchscript``: ``torch.jit.load`` of a ``.ts`` artifact (CPU or CUDA);
* ``onnxruntime``: an ``.onnx`` artifact on the TensorRT, CUDA or CPU execution provider;
* ``tensorrt``: a deserialized ``.engine``, device buffers, asynchronous execution on a stream.

Backends return CPU float32 tensors. Optional libraries are imported when a backend is built.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from enfold.artifact.ort import ORT_PROVIDERS, import_onnxruntime, make_session
from enfold.artifact.targets import torch_target
from enfold.artifact.tensorrt_engine import TensorRTRunner
from enfold.checkpoint.store import check_finite_weights
from enfold.errors import EnfoldError, NonFiniteWeightsError

if TYPE_CHECKING:  # the model code loads only when a checkpoint is served
    from enfold.artifact.sidecar import Sidecar
    from enfold.checkpoint.load import CheckpointFile


class Backend(ABC):
    """A loaded model for one target; ``__call__`` maps a normalised batch to its output."""

    name: str = ""
    device: str = "cpu"
    detail: str = ""  # e.g. the execution provider
    fixed_batch: int | None = None  # the only batch size the artifact accepts
    batch_range: tuple[int, int] | None = None  # (min, max) batch the artifact accepts
    # the metadata the loaded file itself carries (inside the ONNX model or TorchScript archive,
    # or derived from the checkpoint), to check the sidecar against; None when it carries none
    embedded: dict[str, Any] | None = None

    @abstractmethod
    def __call__(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalised float32 (and a restorer's other inputs, in the order of
        its ``restorer_inputs``) -> the target's output, on the CPU."""

    def describe(self) -> str:
        """e.g. ``onnxruntime (cpu, CPUExecutionProvider)``."""
        extra = f", {self.detail}" if self.detail else ""
        return f"{self.name} ({self.device}{extra})"


class TorchBackend(Backend):
    """PyTorch eager on the checkpoint's model: the reference every export is validated
    against."""

    name = "torch"

    def __init__(self, checkpoint: str | Path | CheckpointFile, target: str, device: str,
                 steps: int | None = None, task: str | None = None,
                 grid_shifts: int | None = None, step_decay: float | None = None) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise EnfoldError("--device cuda: no CUDA GPU is visible to PyTorch "
                              "(torch.cuda.is_available() is False); use --device cpu")
        # eager: the restorer runs model.restore itself (autograd input gradients)
        self.spec = torch_target(checkpoint, target, steps, task, grid_shifts, step_decay)
        self.module = self.spec.module.to(device)
        self.device = device
        self.embedded = self.spec.metadata

    def __call__(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the restorer's input gradient comes from torch.func.grad inside
            return self.module(x.to(self.device),
                               *(e.to(self.device) for e in extra)).float().cpu()


class TorchScriptBackend(Backend):
    """``torch.jit.load`` of a ``.ts`` artifact, on the CPU or a CUDA GPU."""

    name = "torchscript"

    def __init__(self, path: Path, meta: Sidecar, device: str) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise EnfoldError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice, not the user's
            warnings.simplefilter("ignore", FutureWarning)
            extra = {"enfold.json": ""}
            try:
                self.module = torch.jit.load(str(path), map_location=device,
                                             _extra_files=extra).eval()
                self.embedded = json.loads(extra["enfold.json"]) if extra["enfold.json"] else None
            except Exception as exc:  # a damaged file or a torch.save zip renamed to .ts
                why = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise EnfoldError(f"{path} is not a TorchScript module ({why}); export it "
                                  "again (enfold export ... --format torchscript)") from exc
        check_finite_weights(self.module.state_dict(), str(path))
        self.device = device
        self.fixed_batch = meta.fixed_batch

    def __call__(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x.to(self.device),
                               *(e.to(self.device) for e in extra)).float().cpu()


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on one execution provider, checked after the session is built."""

    name = "onnxruntime"

    def __init__(self, path: Path, provider: str) -> None:
        import_onnxruntime()
        if provider not in ORT_PROVIDERS:
            raise EnfoldError(f"unknown onnxruntime provider {provider!r}; use one of "
                              f"{', '.join(ORT_PROVIDERS)}")
        check_onnx_initializers(path)
        self.session = make_session(path, provider)  # raises rather than falling back to CPU
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.detail = self.session.get_providers()[0]
        props = self.session.get_modelmeta().custom_metadata_map  # JSON-encoded by the export
        try:
            self.embedded = {k: json.loads(v) for k, v in props.items()} or None
        except ValueError as exc:
            raise EnfoldError(f"{path} carries metadata that is not JSON ({exc}); export it "
                              "again (enfold export ... --format onnx)") from exc

    def __call__(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        feed = {name: t.detach().cpu().float().numpy()
                for name, t in zip(self.input_names, (x, *extra), strict=True)}
        out = self.session.run(None, feed)[0]
        return torch.from_numpy(out).float()


def check_onnx_initializers(path: Path) -> None:
    """Refuse an ONNX model whose stored weights hold NaN or infinity, once at load (one pass
    over the initializers). Without the ``onnx`` package (only needed to export) the outputs are
    still checked on every call by the session."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return
    try:
        model = onnx.load(str(path))
    except Exception:  # onnxruntime reports a damaged file in its own words
        return
    bad = []
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad.append(init.name)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteWeightsError(f"{path} holds NaN or infinite weights ({shown}); it cannot "
                                    "give answers: export it again from a good checkpoint")


class TensorRTBackend(Backend):
    """A TensorRT engine run on torch-allocated device buffers and a CUDA stream."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path, meta: Sidecar) -> None:
        self.runner = TensorRTRunner(path)
        lo, _, hi = meta.batch_profile or (1, 1, 1)
        self.batch_range = (int(lo), int(hi))

    def __call__(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.runner(x, *extra).float().cpu()


# The runner factories of the formats table (enfold.artifact.formats), one signature for all:
# (artifact, its sidecar metadata, device, onnxruntime provider or None) -> the runner.


def open_torchscript(path: Path, meta: Sidecar, device: str,
                     provider: str | None = None) -> Backend:
    """The TorchScript runner of a ``.ts`` artifact."""
    return TorchScriptBackend(path, meta, device)


def open_onnxruntime(path: Path, meta: Sidecar, device: str,
                     provider: str | None = None) -> Backend:
    """ONNX Runtime on ``provider``, or (``None``) the CPU provider on the CPU and the fastest
    GPU provider that actually loads on a GPU."""
    if provider is not None:
        if (provider == "cpu") != (device == "cpu"):
            raise EnfoldError(f"--provider {provider} does not run on --device {device}")
        return OnnxRuntimeBackend(path, provider)
    if device == "cpu":
        return OnnxRuntimeBackend(path, "cpu")
    errors = []
    for name in ("tensorrt", "cuda"):
        try:
            return OnnxRuntimeBackend(path, name)
        except EnfoldError as exc:
            errors.append(str(exc))
    raise EnfoldError("no GPU execution provider loads: " + "; ".join(errors))


def open_tensorrt(path: Path, meta: Sidecar, device: str,
                  provider: str | None = None) -> Backend:
    """The TensorRT runner of an engine, on the GPU only."""
    if device != "cuda":
        raise EnfoldError("the tensorrt backend runs on an NVIDIA GPU: use --device cuda")
    return TensorRTBackend(path, meta)
