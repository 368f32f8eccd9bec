"""TensorRT engines from the exported ONNX model, with the TensorRT Python API (no trtexec).

TensorRT 11 builds strongly typed networks only: an fp16 engine comes from the mixed-precision
ONNX model (``--precision fp16``). TensorRT 10 still has weak typing and the FP16 builder flag.
Both paths are here; ``tensorrt`` is imported only inside these functions. Running an engine
is ``enfold.artifact.tensorrt_engine``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enfold.artifact.formats import BY_NAME
from enfold.artifact.tensorrt_engine import import_tensorrt, require_gpu
from enfold.errors import EnfoldError
from enfold.export.graphs import ExportSpec


def major_version(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def build_engine(onnx_path: Path, engine_path: Path, batch: tuple[int, int, int],
                 input_shape: tuple[int, int, int], precision: str = "fp32",
                 workspace_gib: float = 2.0, timing_cache: Path | None = None) -> Path:
    """Parse ``onnx_path`` and serialize an engine with a min/opt/max batch profile."""
    trt = import_tensorrt()
    require_gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = major_version(trt)
    flags = 0
    if major < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    else:
        # TensorRT 11: networks are strongly typed; precision comes from the ONNX tensors.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EnfoldError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16" and major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    cache = None
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.exists() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch
    for i in range(network.num_inputs):  # the images, and a restorer's sigma or mask
        tensor = network.get_input(i)
        rest = tuple(input_shape) if i == 0 else tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (lo, *rest), (opt, *rest), (hi, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EnfoldError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    if cache is not None and timing_cache is not None:
        timing_cache.write_bytes(bytes(cache.serialize()))
    return engine_path


def write_engine(spec: ExportSpec, path: Path, precision: str,
                 profile: tuple[int, int, int]) -> Path:
    """The TensorRT exporter of the formats table (``enfold.artifact.formats``): the ONNX model
    beside ``path`` (its own artifact, with its sidecar), then the engine built from it for the
    batch ``profile`` (with the folder's timing cache), then the engine's sidecar."""
    from enfold.artifact.sidecar import write_sidecar
    from enfold.export.onnx_export import export_onnx

    onnx_path = path.with_suffix(BY_NAME["onnx"].suffix)
    export_onnx(spec, onnx_path, precision)
    build_engine(onnx_path, path, profile, (spec.in_chans, spec.img_size, spec.img_size),
                 precision, timing_cache=path.parent / "timing.cache")
    write_sidecar(path, {**spec.metadata, "format": "tensorrt", "precision": precision,
                         "batch_profile": list(profile)})
    return path
