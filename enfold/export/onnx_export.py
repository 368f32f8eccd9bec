"""ONNX export through the dynamo exporter (opset 18: LayerNorm stays one op), dynamic batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from enfold.artifact.sidecar import write_sidecar
from enfold.artifact.target_table import TARGET_TABLE
from enfold.errors import EnfoldError
from enfold.export.graphs import ExportSpec, extra_examples, trace_batch

OPSET = 18
OUTPUT_NAMES = {target.name: target.output for target in TARGET_TABLE}
INPUT_NAME = "images"
# Ops kept in fp32 in mixed-precision models: normalisation, softmax and the reductions and
# transcendental ops whose fp16 error the input gradient amplifies step by step.
FP16_KEEP_FP32 = ["LayerNormalization", "Softmax", "ReduceSum", "ReduceMean", "Pow", "Exp",
                  "Erf", "Div", "Sqrt", "Reciprocal"]


def export_onnx(spec: ExportSpec, path: Path, precision: str = "fp32") -> Path:
    """Write ``spec`` as an ONNX model with a dynamic batch; fp16 keeps I/O and norms in fp32."""
    x = torch.zeros(trace_batch({spec.in_chans, spec.img_size}), spec.in_chans, spec.img_size,
                    spec.img_size)
    extra = list(spec.metadata.get("restorer_inputs") or [])  # sigma, mask: restorers only
    batch = torch.export.Dim("batch")
    try:
        program = torch.onnx.export(
            spec.module, (x, *extra_examples(extra, x)), dynamo=True, opset_version=OPSET,
            input_names=[INPUT_NAME, *extra], output_names=[OUTPUT_NAMES[spec.target]],
            # forward(x, *extra): the extra inputs arrive as one tuple argument
            dynamic_shapes={"x": {0: batch},
                            **({"extra": tuple({0: batch} for _ in extra)} if extra else {})},
            verbose=False,
        )
    except Exception as exc:  # the exporter raises many types; say what failed and where
        raise EnfoldError(f"ONNX export of the {spec.target} failed: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    import onnx

    model = onnx.load(str(path))
    if precision == "fp16":
        model = to_mixed_fp16(model)
    meta = {**spec.metadata, "format": "onnx", "precision": precision, "opset": OPSET,
            "input": INPUT_NAME, "output": OUTPUT_NAMES[spec.target]}
    set_metadata(model, meta)
    onnx.save(model, str(path))
    write_sidecar(path, meta)
    return path


def to_mixed_fp16(model):
    """Network internals in fp16; inputs, outputs and sensitive ops in fp32."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise EnfoldError("--precision fp16 needs onnxconverter-common: "
                          "pip install onnxconverter-common") from exc
    return float16.convert_float_to_float16(model, keep_io_types=True,
                                            op_block_list=FP16_KEEP_FP32)


def set_metadata(model, meta: dict[str, Any]) -> None:
    """Store every metadata entry as an ONNX metadata property (JSON-encoded values)."""
    del model.metadata_props[:]
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)


def write_onnx(spec: ExportSpec, path: Path, precision: str,
               profile: tuple[int, int, int]) -> Path:
    """The ONNX exporter of the formats table (``enfold.artifact.formats``): any batch runs,
    so ``profile`` is not needed."""
    return export_onnx(spec, path, precision)
