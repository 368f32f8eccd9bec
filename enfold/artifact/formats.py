"""The table of file formats: what each is called, its file suffixes, the backend that runs it,
the function that writes it, the precisions it holds and its Triton names.

Every choice between formats (``enfold export --format``, ``--backend``, a file's suffix, the
Triton entry of an artifact) is a lookup here. The exporter and runner of a format are named as
``"module:function"`` and imported only when used, so this module imports nothing heavy
(``enfold --help`` lists the formats without torch, onnxruntime or tensorrt), and the exporters,
which sit in ``enfold.export`` above this layer, are named without being imported from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enfold.errors import EnfoldError

PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class TritonNames:
    """How Triton Inference Server loads a format: ``platform``, ``backend``, the file name
    it looks for, whether it names tensors by position (``<name>__<index>``), and whether it
    runs on the GPU only."""

    platform: str
    backend: str
    model_file: str
    positional_names: bool = False
    gpu_only: bool = False


@dataclass(frozen=True)
class Format:
    """One file format enfold writes or runs.

    ``suffixes``: the first is the one enfold writes, the others are recognised too.
    ``backend``: the runner that runs it (``None``: enfold does not run it). ``runner``:
    ``"module:function"`` building that runner, called as ``(artifact, meta, device, provider)``.
    ``exporter``: ``"module:function"`` writing it (``None``: not written by ``enfold export``);
    for a format with a sidecar it is called as ``(spec, path, precision, (min, opt, max))``.
    ``sidecar``: artifacts of this format carry a JSON sidecar (the runnable exports).
    ``checks``: ``"module:function"`` s that fail fast, with the fix, where the format cannot run
    here (a missing library, no GPU). ``export_checks``: export runs the checks too (a TensorRT
    engine is built by the runtime that runs it). ``validate_device``: where export validates it.
    ``beside``: other formats an export writes next to it (a TensorRT engine's ONNX model).
    ``batch_profile``: built for the export's ``--batch MIN:OPT:MAX`` profile and validated at
    those batch sizes.
    """

    name: str
    suffixes: tuple[str, ...]
    backend: str | None
    runner: str | None
    exporter: str | None
    precisions: tuple[str, ...]
    sidecar: bool = True
    checks: tuple[str, ...] = ()
    export_checks: bool = False
    validate_device: str = "cpu"
    beside: tuple[str, ...] = ()
    batch_profile: bool = False
    triton: TritonNames | None = None
    help: str = ""

    @property
    def suffix(self) -> str:
        """The suffix enfold writes."""
        return self.suffixes[0]

    def check(self) -> None:
        """Raise a clear :class:`EnfoldError` where this format cannot run here."""
        for ref in self.checks:
            resolve(ref)()

    def runner_factory(self) -> Any:
        """The function building this format's runner (imported now)."""
        if self.runner is None:
            raise EnfoldError(f"enfold does not run {self.name} files; runnable formats: "
                              f"{', '.join(FORMATS)}")
        return resolve(self.runner)

    def exporter_function(self) -> Any:
        """The function writing this format (imported now)."""
        if self.exporter is None:
            raise EnfoldError(f"`enfold export` does not write {self.name} files; choose one of "
                              f"{', '.join(EXPORT_FORMATS)}")
        return resolve(self.exporter)


_TRT = "enfold.artifact.tensorrt_engine"
TABLE: tuple[Format, ...] = (
    Format("torchscript", (".ts",), "torchscript", "enfold.artifact.runners:open_torchscript",
           "enfold.export.torchscript_export:write_torchscript", ("fp32",),
           triton=TritonNames("pytorch_libtorch", "pytorch", "model.pt", positional_names=True),
           help="TorchScript (torch.jit.load), fp32"),
    Format("onnx", (".onnx",), "onnxruntime", "enfold.artifact.runners:open_onnxruntime",
           "enfold.export.onnx_export:write_onnx", PRECISIONS,
           checks=("enfold.artifact.ort:import_onnxruntime",),
           triton=TritonNames("onnxruntime_onnx", "onnxruntime", "model.onnx"),
           help="ONNX, run by ONNX Runtime"),
    Format("tensorrt", (".engine", ".plan"), "tensorrt", "enfold.artifact.runners:open_tensorrt",
           "enfold.export.tensorrt_build:write_engine", PRECISIONS,
           checks=(f"{_TRT}:import_tensorrt", f"{_TRT}:require_gpu"), export_checks=True,
           validate_device="cuda", beside=("onnx",), batch_profile=True,
           triton=TritonNames("tensorrt_plan", "tensorrt", "model.plan", gpu_only=True),
           help="a TensorRT engine for this GPU"),
    Format("safetensors", (".safetensors",), None, None,
           "enfold.export.timm_weights:export_timm_weights", ("fp32",), sidecar=False,
           help="the encoder as timm weights"),
    Format("checkpoint", (".pt",), "torch", "enfold.artifact.session:torch_runner", None,
           ("fp32",), sidecar=False, help="a training checkpoint, run by PyTorch eager"),
)
BY_NAME = {fmt.name: fmt for fmt in TABLE}
BY_SUFFIX = {suffix: fmt for fmt in TABLE for suffix in fmt.suffixes}
BY_BACKEND = {fmt.backend: fmt for fmt in TABLE if fmt.backend}

# The runnable artifact formats, which carry a sidecar.
FORMATS = tuple(fmt.name for fmt in TABLE if fmt.sidecar)
# What ``enfold export --format`` writes.
EXPORT_FORMATS = tuple(fmt.name for fmt in TABLE if fmt.exporter)
# The runners, ``torch`` (the checkpoint itself) first.
BACKENDS = ("torch", *(fmt.backend for fmt in TABLE if fmt.sidecar and fmt.backend))
# artifact format -> the backend that runs it
FORMAT_BACKEND = {fmt.name: fmt.backend for fmt in TABLE
                  if fmt.sidecar and fmt.backend and fmt.backend != "torch"}


def resolve(ref: str) -> Any:
    """``"package.module:name"`` -> that object, importing the module now."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def format_named(name: str, choices: tuple[str, ...] = EXPORT_FORMATS,
                 option: str = "--format") -> Format:
    """The format called ``name`` among ``choices``, or an error listing them."""
    if name not in choices:
        raise EnfoldError(f"unknown {option} {name!r}; choose one of {', '.join(choices)}")
    return BY_NAME[name]


def format_of_file(path: str | Path) -> Format:
    """The format of a file, by its suffix, or an error listing the suffixes enfold knows."""
    path = Path(path)
    fmt = BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(f"{s} ({f.name})" for s, f in BY_SUFFIX.items())
        raise EnfoldError(f"{path}: unknown file suffix {path.suffix or '(none)'!r}; enfold "
                          f"knows {known}")
    return fmt


def is_format(path: str | Path, name: str) -> bool:
    """Whether ``path``'s suffix is one of format ``name``'s (``False`` for unknown ones)."""
    fmt = BY_SUFFIX.get(Path(path).suffix.lower())
    return fmt is not None and fmt.name == name


def backend_format(backend: str) -> Format:
    """The format ``backend`` runs (``torch``: the checkpoint), or an error listing them."""
    if backend not in BACKENDS:
        raise EnfoldError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return BY_BACKEND[backend]
