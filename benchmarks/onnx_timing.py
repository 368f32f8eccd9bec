"""Per-image ONNX Runtime CPU time of exported restorers (``descent.py --time-onnx``).

Each checkpoint is exported as ``enfold export --target restorer --format onnx`` does (and
validated against PyTorch on its held-out images), then its graph is run by ONNX Runtime on the
CPU at one batch, with the same threads for every model: a few warm-up runs, then the median of
repeated runs. The graph alone is timed (no normalisation, padding or file decoding).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Timing:
    """One exported restorer's size, validation and time per image."""

    restorer: str  # "energy" or the peer's kind
    steps: int
    img_size: int  # the tiles timed are img_size x img_size
    parameters: int
    nodes: int  # ONNX graph nodes
    max_abs_error: float  # ONNX against PyTorch, held-out images
    ms_per_image: float  # median over the timed runs
    ms_spread: tuple[float, float]  # fastest and slowest run, per image


def export_restorer(checkpoint: Path, out_dir: Path, steps: int | None = None
                    ) -> tuple[Path, dict]:
    """The validated ONNX restorer of ``checkpoint`` in ``out_dir``: ``(path, validation)``."""
    from enfold.export.export import export_artifact

    result = export_artifact(str(checkpoint), "restorer", "onnx", out_dir, steps=steps,
                             overwrite=True)
    return Path(result["artifact"]), result["validation"]


def time_graph(path: Path, batch: int, threads: int, warmup: int, repeats: int,
               sigma: float = 0.1) -> list[float]:
    """Seconds per run of the ONNX graph at ``path`` on ``batch`` random tiles (and ``sigma``
    for a noise-level restorer), after ``warmup`` untimed runs."""
    import onnxruntime as ort

    from enfold.artifact.sidecar import read_sidecar

    meta = read_sidecar(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    size = (batch, meta.in_chans, meta.img_size, meta.img_size)
    feed = {meta.input or "images": rng.standard_normal(size, dtype=np.float32)}
    extra = {"sigma": np.full(batch, sigma, np.float32),
             "mask": np.zeros((batch, 1, meta.img_size, meta.img_size), np.float32)}
    feed |= {name: extra[name] for name in meta.restorer_inputs or []}
    for _ in range(warmup):
        session.run(None, feed)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        runs.append(time.perf_counter() - start)
    return runs


def time_restorer(checkpoint: Path, out_dir: Path, batch: int, threads: int,
                  warmup: int = 3, repeats: int = 20, steps: int | None = None) -> Timing:
    """Export ``checkpoint``'s restorer to ONNX (validated) and time it per image."""
    import onnx

    from enfold.artifact.sidecar import read_sidecar
    from enfold.checkpoint.load import load_model

    path, validation = export_restorer(checkpoint, out_dir, steps)
    meta = read_sidecar(path)
    runs = [1000 * t / batch for t in time_graph(path, batch, threads, warmup, repeats)]
    model = load_model(checkpoint).model
    return Timing(meta.restorer or "energy", int(meta.steps or 1), meta.img_size,
                  sum(p.numel() for p in model.parameters()),
                  len(onnx.load(str(path)).graph.node), float(validation["max_abs_error"]),
                  statistics.median(runs), (min(runs), max(runs)))
