"""TorchScript export: loads with ``torch.jit.load`` and runs without enfold's model code."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from enfold.artifact.sidecar import write_sidecar
from enfold.export.graphs import ExportSpec, extra_examples


def export_torchscript(spec: ExportSpec, path: Path, batch: int) -> Path:
    """Trace ``spec`` to TorchScript.

    Classifier, encoder and energy keep a free batch. The restorer is a trace of the unrolled
    aten graph, whose batch size is fixed at ``batch`` (tracing records the traced shapes).
    """
    x = torch.zeros(batch, spec.in_chans, spec.img_size, spec.img_size)
    with torch.no_grad():
        extra = extra_examples(list(spec.metadata.get("restorer_inputs") or []), x)
        traced = torch.jit.trace(spec.module, (x, *extra), check_trace=False)
    meta = {**spec.metadata, "format": "torchscript", "precision": "fp32"}
    if spec.target == "restorer":
        meta["fixed_batch"] = batch
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path), _extra_files={"enfold.json": json.dumps(meta)})
    write_sidecar(path, meta)
    return path


def write_torchscript(spec: ExportSpec, path: Path, precision: str,
                      profile: tuple[int, int, int]) -> Path:
    """The TorchScript exporter of the formats table (``enfold.artifact.formats``): fp32, a
    restorer traced at the profile's optimal batch."""
    return export_torchscript(spec, path, batch=profile[1])
