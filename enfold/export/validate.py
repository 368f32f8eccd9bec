"""Validation of an exported artifact against PyTorch on held-out real images.

Reports max and mean absolute error and, for restorers, the PSNR between the two outputs and
each one's PSNR against the clean image on the corrupted region. Fails beyond the tolerance of
the artifact's precision. ONNX files also pass ``onnx.checker`` (full check) and an allow-list of
ops that TensorRT's ONNX parser supports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from enfold.errors import EnfoldError
from enfold.export.graphs import build_spec
from enfold.export.onnx_export import read_sidecar

# max |artifact - pytorch| allowed, by precision (outputs: logits, features, energy, image).
# fp32 is absolute; fp16 is relative to the output's scale, max(1, max |pytorch output|),
# because fp16 keeps about three significant digits whatever the magnitude.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}

# ONNX ops that TensorRT's ONNX parser supports (TensorRT 10/11 operator matrix, the subset a
# ViT and its input gradient can produce). Anything else fails validation.
TENSORRT_OPS = frozenset("""
Abs Add And ArgMax Cast Ceil Clip Concat Constant ConstantOfShape Conv Cos Div Einsum Equal Erf
Exp Expand Flatten Floor Gather GatherElements Gelu Gemm Greater GreaterOrEqual Identity
LayerNormalization Less LessOrEqual Log MatMul Max Mean Min Mod Mul Neg Not Or Pow Range
Reciprocal ReduceMax ReduceMean ReduceMin ReduceSum Relu Reshape ScatterElements ScatterND
Shape Sigmoid Sign Sin Slice Softmax Split Sqrt Squeeze Sub Tanh Tile TopK Transpose Trilu
Unsqueeze Where Xor
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


def load_runner(artifact: Path, meta: dict[str, Any], device: str = "cpu"):
    """A callable ``(B, C, H, W) float32 tensor -> output tensor`` for the artifact."""
    fmt = meta.get("format")
    if fmt == "onnx":
        import numpy as np

        from enfold.export.ort import make_session

        session = make_session(artifact, device)
        name = session.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            out = session.run(None, {name: x.numpy().astype(np.float32)})[0]
            return torch.from_numpy(out).float()

        return run
    if fmt == "torchscript":
        module = torch.jit.load(str(artifact), map_location="cpu")
        return lambda x: module(x).float()
    if fmt == "tensorrt":
        from enfold.export.tensorrt_build import TensorRTRunner

        runner = TensorRTRunner(artifact)
        return lambda x: runner(x).float().cpu()
    raise EnfoldError(f"{artifact}: unknown artifact format {fmt!r} in its sidecar")


def heldout_inputs(checkpoint: str, meta: dict[str, Any], count: int):
    """Held-out images of the checkpoint's data: ``(inputs, clean, weight)``, normalised."""
    from enfold.config import config_from_checkpoint
    from enfold.corrupt import CorruptionContext, build_one
    from enfold.data import CorruptedDataset, build_source
    from enfold.pipeline.checkpoint import load_checkpoint

    cfg = config_from_checkpoint(load_checkpoint(checkpoint)["config"])
    source = build_source(cfg.data.source, "heldout", cfg.model, cfg.data, heldout_count=count)
    count = min(count, len(source))
    if meta["target"] == "restorer":
        task = meta["task"]
        corruption = build_one(task, getattr(cfg.corrupt, task, None),
                               CorruptionContext.from_config(cfg))
    else:
        def corruption(img, generator):
            return img, img, torch.ones(1, *img.shape[1:])
    data = CorruptedDataset(source, corruption, cfg.data.mean, cfg.data.std,
                            seed=cfg.eval.seed, augment=False)
    items = [data[i] for i in range(count)]
    return tuple(torch.stack(t) for t in zip(*items, strict=True)), cfg


def validate_artifact(artifact: str | Path, checkpoint: str, batches: tuple[int, ...] = (1, 3, 8),
                      count: int = 64, tolerance: float | None = None,
                      device: str = "cpu") -> dict[str, Any]:
    """Compare ``artifact`` with PyTorch; raise :class:`ValidationError` beyond tolerance."""
    from enfold.data import denormalize
    from enfold.pipeline.restoration_eval import region_psnr

    artifact = Path(artifact)
    meta = read_sidecar(artifact)
    report: dict[str, Any] = {"artifact": str(artifact), "target": meta["target"],
                              "format": meta["format"], "precision": meta["precision"]}
    if meta["format"] == "onnx":
        report.update(check_onnx_graph(artifact))
    spec = build_spec(checkpoint, meta["target"], steps=meta.get("steps"), task=meta.get("task"),
                      trace=False)
    (inputs, clean, weight), cfg = heldout_inputs(checkpoint, meta, count)
    run = load_runner(artifact, meta, device)
    if "fixed_batch" in meta:  # a traced restorer runs at its traced batch size only
        batches = (meta["fixed_batch"],)
    outs, refs = [], []
    step = max(batches)
    if step > inputs.shape[0]:
        raise EnfoldError(f"batch {step} exceeds the {inputs.shape[0]} held-out images")
    usable = inputs.shape[0] - inputs.shape[0] % step
    per_batch = {}
    with torch.no_grad():
        for b in batches:  # each requested batch size on its own
            out, ref = run(inputs[:b]), spec.reference(inputs[:b]).float()
            per_batch[str(b)] = float((out - ref).abs().max())
        for start in range(0, usable, step):  # the whole held-out set at the largest batch
            x = inputs[start:start + step]
            outs.append(run(x))
            refs.append(spec.reference(x).float())
    out, ref = torch.cat(outs), torch.cat(refs)
    err = (out - ref).abs()
    report.update(images=int(out.shape[0]), batches=list(batches), max_abs_by_batch=per_batch,
                  max_abs_error=float(err.max()), mean_abs_error=float(err.mean()))
    if meta["target"] == "classifier":
        report["top1_agreement"] = float((out.argmax(1) == ref.argmax(1)).float().mean())
    if meta["target"] == "restorer":
        x0 = inputs[:usable]
        update_err = ((out - x0) - (ref - x0)).abs().max()
        pix = [denormalize(t, cfg.data.mean, cfg.data.std) for t in (out, ref, clean[:usable],
                                                                     x0)]
        w = weight[:usable]
        full = torch.ones_like(w)
        report.update(
            max_abs_update_error=float(update_err),
            psnr_artifact_vs_pytorch=float(region_psnr(pix[0], pix[1], full).mean()),
            psnr_artifact_vs_clean=float(region_psnr(pix[0], pix[2], w).mean()),
            psnr_pytorch_vs_clean=float(region_psnr(pix[1], pix[2], w).mean()),
            psnr_input_vs_clean=float(region_psnr(pix[3], pix[2], w).mean()),
        )
    tol = tolerance if tolerance is not None else TOLERANCE[meta["precision"]]
    if tolerance is None and meta["precision"] == "fp16":
        tol *= max(1.0, float(ref.abs().max()))
    report["tolerance"] = tol
    worst = max(report["max_abs_error"], *per_batch.values())
    report["passed"] = bool(worst <= tol and report.get("top1_agreement", 1.0) == 1.0)
    if not report["passed"]:
        raise ValidationError(
            f"{artifact} differs from PyTorch: max abs error {worst:.3g} (tolerance {tol:g} for "
            f"{meta['precision']}), top-1 agreement {report.get('top1_agreement', 'n/a')}"
        )
    return report
