"""Validation of an exported artifact against PyTorch on held-out real images.

The artifact runs through the same session as ``enfold.runtime.load`` (normalisation, batch
padding, the backend's runner); the reference is the torch runner on the checkpoint.

Reports max and mean absolute error and, for restorers, the PSNR between the two outputs and
each one's PSNR against the clean image on the corrupted region. Fails beyond the tolerance of
the artifact's precision. ONNX files also pass ``onnx.checker`` (full check) and an allow-list of
ops that TensorRT's ONNX parser supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from enfold.artifact.formats import FORMAT_BACKEND
from enfold.artifact.runners import TorchBackend
from enfold.artifact.session import open_artifact
from enfold.artifact.sidecar import Sidecar, check_agrees, read_sidecar, sidecar_path
from enfold.checkpoint.load import CheckpointFile, open_checkpoint
from enfold.errors import EnfoldError

# a checkpoint's path, or the file already opened (then neither read nor hashed again)
Checkpoint = str | Path | CheckpointFile

# max |artifact - pytorch| allowed, by precision (outputs: logits, features, energy, image).
# fp32 is absolute; fp16 is relative to the output's scale, max(1, max |pytorch output|),
# because fp16 keeps about three significant digits whatever the magnitude.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}

# ONNX ops that TensorRT's ONNX parser supports (TensorRT 10/11 operator matrix, the subset a
# ViT, its input gradient and the data-consistency projections can produce: the mask restorer's
# hole finder and hole fill pool and pad). Anything else fails validation.
TENSORRT_OPS = frozenset("""
Abs Add And ArgMax AveragePool Cast Ceil Clip Concat Constant ConstantOfShape Conv Cos Div
Einsum Equal Erf Exp Expand Flatten Floor Gather GatherElements Gelu Gemm Greater
GreaterOrEqual Identity LayerNormalization Less LessOrEqual Log MatMul Max MaxPool Mean Min Mod
Mul Neg Not Or Pad Pow Range Reciprocal ReduceMax ReduceMean ReduceMin ReduceSum Relu Reshape
ScatterElements ScatterND Shape Sigmoid Sign Sin Slice Softmax Split Sqrt Squeeze Sub Tanh Tile
TopK Transpose Trilu Unsqueeze Where Xor
""".split())


class ValidationError(EnfoldError):
    """The artifact disagrees with PyTorch beyond tolerance, or its graph is not deployable."""


def check_onnx_graph(path: Path) -> dict[str, Any]:
    """``onnx.checker`` with full checks, and the TensorRT op allow-list."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ValidationError(f"onnx.checker rejected {path}: {exc}") from exc
    model = onnx.load(str(path))
    ops = sorted({n.op_type for n in model.graph.node})
    unsupported = sorted(set(ops) - TENSORRT_OPS)
    if unsupported:
        raise ValidationError(f"{path} holds ops outside the TensorRT allow-list: {unsupported}")
    return {"onnx_ops": ops, "onnx_nodes": len(model.graph.node)}


def heldout_pixels(checkpoint: Checkpoint, target: str, count: int, task: str | None = None):
    """Held-out images of the checkpoint's data in pixel space [0, 1]: ``(inputs, clean,
    weight)``, the inputs corrupted with the restorer's ``task``, and the config."""
    from enfold.corrupt import CorruptionContext, build_one, corrupt_batch
    from enfold.data import build_source

    cfg = open_checkpoint(checkpoint).cfg
    source = build_source(cfg.data.source, "heldout", cfg.model, cfg.data, heldout_count=count)
    images = torch.stack([source.image(i) for i in range(min(count, len(source)))]).float()
    if target != "restorer":
        return (images, images, torch.ones(images.shape[0], 1, *images.shape[2:])), cfg
    task = task or cfg.corrupt.tasks[0]
    corruption = build_one(task, getattr(cfg.corrupt, task, None),
                           CorruptionContext.from_config(cfg))
    return corrupt_batch(corruption, images, cfg.eval.seed), cfg


def restorer_extras(inputs: list[str] | tuple[str, ...] | None, pixels: torch.Tensor,
                    clean: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """A restorer's other inputs (``inputs``, its sidecar's ``restorer_inputs``) for held-out
    pairs, in its order: each image's true noise level (``sigma``, pixels) and its hole mask
    (``mask``)."""
    known = {"sigma": lambda: (pixels - clean).float().pow(2).mean((1, 2, 3)).sqrt(),
             "mask": lambda: weight.float()}
    return {name: known[name]() for name in inputs or []}


def heldout_inputs(checkpoint: Checkpoint, target: str, count: int, task: str | None = None):
    """Held-out images of the checkpoint's data: ``(inputs, clean, weight)``, normalised."""
    from enfold.data import normalize

    (inputs, clean, weight), cfg = heldout_pixels(checkpoint, target, count, task)
    return (normalize(inputs, cfg.data.mean, cfg.data.std),
            normalize(clean, cfg.data.mean, cfg.data.std), weight), cfg


@dataclass
class Runs:
    """The artifact's and PyTorch's outputs on the same held-out images (:func:`run_both`):
    ``by_batch`` for each requested batch size (``batches``) on its own, ``out`` and ``ref``
    over the ``usable`` images (a multiple of the largest batch), and those images in pixels
    and normalised."""

    batches: tuple[int, ...]
    by_batch: dict[int, tuple[torch.Tensor, torch.Tensor]]
    out: torch.Tensor
    ref: torch.Tensor
    usable: int
    inputs: torch.Tensor
    pixels: torch.Tensor
    clean: torch.Tensor
    weight: torch.Tensor
    mean: Any
    std: Any


@dataclass
class Verdict:
    """The tolerance an artifact is held to, its worst error and whether it passed."""

    tolerance: float
    worst: float
    passed: bool


def run_both(artifact: Path, checkpoint: Checkpoint, meta: Sidecar,
             batches: tuple[int, ...], count: int, device: str) -> Runs:
    """Run ``artifact`` (as ``enfold.runtime.load`` runs it) and PyTorch eager on the
    checkpoint over ``count`` held-out images; ValidationError when the sidecar disagrees with
    the checkpoint."""
    from enfold.data import normalize

    target = meta.target
    # The artifact runs in the session users get from enfold.runtime.load (its normalisation,
    # batch cutting and padding); PyTorch sees the same pixels normalised by the data pipeline.
    session = open_artifact(artifact, FORMAT_BACKEND[meta.format], device)
    checkpoint = open_checkpoint(checkpoint)  # read once: the reference, the data, the config
    reference = TorchBackend(checkpoint, target, "cpu", steps=meta.steps, task=meta.task,
                             grid_shifts=meta.grid_shifts, step_decay=meta.step_decay)
    # every sidecar field that changes results (sizes, normalisation, class names, steps, step
    # sizes, task settings) must be the checkpoint's: equal outputs alone would not show an
    # edited mean or a wrong class list
    try:
        check_agrees(meta, reference.spec.metadata, f"the checkpoint {checkpoint.path}",
                     str(sidecar_path(artifact)))
    except EnfoldError as exc:
        raise ValidationError(str(exc)) from exc
    (pixels, clean, weight), cfg = heldout_pixels(checkpoint, target, count, meta.task)
    inputs = normalize(pixels, cfg.data.mean, cfg.data.std)
    extras = restorer_extras(meta.restorer_inputs, pixels, clean, weight)

    def run(start: int, stop: int) -> torch.Tensor:
        part = {k: v[start:stop] for k, v in extras.items()}
        return torch.from_numpy(session.raw(target, pixels[start:stop], **part)).float()

    def reference_run(start: int, stop: int) -> torch.Tensor:
        return reference(inputs[start:stop], *(v[start:stop] for v in extras.values())).float()

    outs, refs = [], []
    step = max(batches)
    if step > inputs.shape[0]:
        raise EnfoldError(f"batch {step} exceeds the {inputs.shape[0]} held-out images")
    usable = inputs.shape[0] - inputs.shape[0] % step
    with torch.no_grad():
        by_batch = {b: (run(0, b), reference_run(0, b)) for b in batches}  # each on its own
        for start in range(0, usable, step):  # the whole held-out set at the largest batch
            outs.append(run(start, start + step))
            refs.append(reference_run(start, start + step))
    return Runs(tuple(batches), by_batch, torch.cat(outs), torch.cat(refs), usable, inputs,
                pixels, clean, weight, cfg.data.mean, cfg.data.std)


def compare(target: str, runs: Runs) -> dict[str, Any]:
    """How far the artifact's outputs are from PyTorch's: max and mean absolute error (also per
    batch size), top-1 agreement for classifiers, update error and PSNRs for restorers."""
    from enfold.data import denormalize
    from enfold.metrics import region_psnr

    out, ref, usable = runs.out, runs.ref, runs.usable
    err = (out - ref).abs()
    metrics: dict[str, Any] = {
        "images": int(out.shape[0]), "batches": list(runs.batches),
        "max_abs_by_batch": {str(b): float((o - r).abs().max())
                             for b, (o, r) in runs.by_batch.items()},
        "max_abs_error": float(err.max()), "mean_abs_error": float(err.mean())}
    if target == "classifier":
        metrics["top1_agreement"] = float((out.argmax(1) == ref.argmax(1)).float().mean())
    if target == "restorer":
        x0 = runs.inputs[:usable]
        update_err = ((out - x0) - (ref - x0)).abs().max()
        pix = [denormalize(t, runs.mean, runs.std) for t in (out, ref)]
        pix += [runs.clean[:usable], runs.pixels[:usable]]
        w = runs.weight[:usable]
        full = torch.ones_like(w)
        metrics.update(
            max_abs_update_error=float(update_err),
            psnr_artifact_vs_pytorch=float(region_psnr(pix[0], pix[1], full).mean()),
            psnr_artifact_vs_clean=float(region_psnr(pix[0], pix[2], w).mean()),
            psnr_pytorch_vs_clean=float(region_psnr(pix[1], pix[2], w).mean()),
            psnr_input_vs_clean=float(region_psnr(pix[3], pix[2], w).mean()),
        )
    return metrics


STEP_SWEEP = 4  # an energy restorer's card reports PSNR for K = 1 .. STEP_SWEEP


def psnr_by_steps(checkpoint: Checkpoint, meta: Sidecar, runs: Runs,
                  max_steps: int = STEP_SWEEP) -> dict[str, Any]:
    """An energy restorer's held-out PSNR in PyTorch for K = 1 .. ``max_steps`` restoration
    steps on the validation images, and the best K: what to pass to ``enfold export --steps``.
    The same reference as the validation (its grid shifts, task and second inputs), one K at a
    time; a one-pass peer has no K and gets an empty report."""
    from enfold.data import denormalize
    from enfold.metrics import region_psnr

    if (meta.restorer or "energy") != "energy":
        return {}
    usable = runs.usable
    extras = restorer_extras(meta.restorer_inputs, runs.pixels[:usable], runs.clean[:usable],
                             runs.weight[:usable])
    by_k: dict[str, float] = {}
    with torch.no_grad():
        for k in range(1, max_steps + 1):
            if k == meta.steps:  # the validation's own reference already ran this K
                restored = runs.ref
            else:
                reference = TorchBackend(checkpoint, "restorer", "cpu", steps=k, task=meta.task,
                                         grid_shifts=meta.grid_shifts,
                                         step_decay=meta.step_decay)
                restored = reference(runs.inputs[:usable], *extras.values()).float()
            pixels = denormalize(restored, runs.mean, runs.std)
            by_k[str(k)] = float(region_psnr(pixels, runs.clean[:usable],
                                             runs.weight[:usable]).mean())
    best = max(by_k, key=lambda k: by_k[k])
    return {"psnr_pytorch_by_steps": by_k, "best_steps": int(best)}


def verdict(precision: str, metrics: dict[str, Any], ref: torch.Tensor,
            tolerance: float | None = None) -> Verdict:
    """Whether ``metrics`` (:func:`compare`) are within ``tolerance`` (default: the
    precision's, relative to the output's scale ``ref`` for fp16) and every top-1 agrees."""
    tol = tolerance if tolerance is not None else TOLERANCE[precision]
    if tolerance is None and precision == "fp16":
        tol *= max(1.0, float(ref.abs().max()))
    worst = max(metrics["max_abs_error"], *metrics["max_abs_by_batch"].values())
    return Verdict(tol, worst,
                   bool(worst <= tol and metrics.get("top1_agreement", 1.0) == 1.0))


def validate_artifact(artifact: str | Path, checkpoint: Checkpoint,
                      batches: tuple[int, ...] = (1, 3, 8), count: int = 64,
                      tolerance: float | None = None, device: str = "cpu") -> dict[str, Any]:
    """Compare ``artifact``, run as ``enfold.runtime.load`` runs it, with PyTorch eager on the
    checkpoint; raise :class:`ValidationError` beyond tolerance. The steps: :func:`run_both`,
    :func:`compare`, :func:`verdict`."""
    artifact = Path(artifact)
    meta = read_sidecar(artifact)
    precision = meta.precision or "fp32"
    report: dict[str, Any] = {"artifact": str(artifact), "target": meta.target,
                              "format": meta.format, "precision": precision}
    if meta.format == "onnx":
        report.update(check_onnx_graph(artifact))
    checkpoint = open_checkpoint(checkpoint)  # read once for the validation and the K sweep
    runs = run_both(artifact, checkpoint, meta, batches, count, device)
    report.update(compare(meta.target, runs))
    if meta.target == "restorer":
        report.update(psnr_by_steps(checkpoint, meta, runs))
    result = verdict(precision, report, runs.ref, tolerance)
    report.update(tolerance=result.tolerance, passed=result.passed)
    if not result.passed:
        raise ValidationError(
            f"{artifact} differs from PyTorch: max abs error {result.worst:.3g} (tolerance "
            f"{result.tolerance:g} for {precision}), top-1 agreement "
            f"{report.get('top1_agreement', 'n/a')}"
        )
    return report
