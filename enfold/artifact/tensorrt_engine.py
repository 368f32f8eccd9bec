"""Running serialized TensorRT engines; ``tensorrt`` is imported only when one is used."""

from __future__ import annotations

from pathlib import Path

from enfold.errors import EnfoldError

INSTALL_HINT = (
    "TensorRT is not installed. On a machine with an NVIDIA GPU: pip install 'enfold[tensorrt]' "
    "(the tensorrt wheel comes from NVIDIA's package index), or use JetPack's TensorRT on Jetson."
)


def import_tensorrt():
    """The ``tensorrt`` module, or a clear error naming what to install."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EnfoldError(INSTALL_HINT) from exc
    return trt


def require_gpu() -> None:
    """A clear error when no NVIDIA GPU is visible (TensorRT builds and runs only on one)."""
    import torch

    if not torch.cuda.is_available():
        raise EnfoldError("building a TensorRT engine needs an NVIDIA GPU, and none is visible "
                          "(torch.cuda.is_available() is False)")


class TensorRTRunner:
    """Run a serialized engine on torch CUDA tensors (device buffers, one CUDA stream)."""

    def __init__(self, engine_path: Path):
        trt = import_tensorrt()
        require_gpu()
        import torch

        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EnfoldError(f"{engine_path} is not a TensorRT engine for this TensorRT version "
                              "and GPU; rebuild it on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output = next(n for n in names if self.engine.get_tensor_mode(n) != mode)
        self.stream = torch.cuda.Stream()

    def __call__(self, x, *extra):
        """Run on ``x`` and the engine's other inputs (a restorer's sigma or mask), in the
        engine's input order."""
        torch = self.torch
        feeds = [t.to("cuda", torch.float32).contiguous() for t in (x, *extra)]
        if len(feeds) != len(self.inputs):
            raise EnfoldError(f"this engine takes {len(self.inputs)} inputs "
                              f"({', '.join(self.inputs)}), got {len(feeds)}")
        for name, t in zip(self.inputs, feeds, strict=True):
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output)), device="cuda",
                          dtype=torch.float32)
        self.context.set_tensor_address(self.output, out.data_ptr())
        with torch.cuda.stream(self.stream):
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EnfoldError("TensorRT execution failed")
        self.stream.synchronize()
        return out
