"""Tiny pretrain and finetune runs and their exports, made once per test session for the
ecosystem tests (Open Inference Protocol, Triton repository, timm weights): real checkpoints,
metrics and artifacts in seconds on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import DIGITS_TINY, ROOT, TINY, train

FINETUNE_TINY = ROOT / "configs" / "finetune" / "digits-tiny.yaml"
BATCH = "1:4:16"  # the exports' batch range (max_batch_size 16 in Triton)
_SHARED: dict[str, Any] = {}


def train_tiny(root: Path, steps: int = 10) -> dict[str, Path]:
    """``{"pretrain": ckpt, "finetune": ckpt}`` of a 1-block, 8x8 digits model."""
    extra = [*TINY, f"train.max_steps={steps}", f"eval.every={steps}"]
    pre = train("pretrain", DIGITS_TINY, root / "pre", extra)
    return {"pretrain": pre, "finetune": train("finetune", FINETUNE_TINY, root / "ft", extra,
                                               pretrained=pre)}


def shared_tiny(tmp_path_factory) -> dict[str, Any]:
    """The tiny runs plus unvalidated exports, made on first use and shared by later tests:
    ``{"runs": {...}, "artifacts": {...}, "root": folder}`` with ONNX classifier and encoder
    (``"classifier"``, ``"encoder"``) and TorchScript classifier, restorer and energy
    (``"classifier-ts"`` ...)."""
    if not _SHARED:
        from enfold.export.export import export_artifact

        root = tmp_path_factory.mktemp("tiny-shared")
        runs = train_tiny(root)
        arts = {}
        # ONNX's exporter takes seconds per graph (most for the restorer's unrolled graph, about
        # a minute on 2 busy cores), a TorchScript trace a fraction of one
        for stage, target in [("finetune", "classifier"), ("pretrain", "encoder")]:
            arts[target] = Path(export_artifact(str(runs[stage]), target, "onnx",
                                                root / "exports", batch=BATCH,
                                                validate=False)["artifact"])
        for stage, target in [("finetune", "classifier"), ("pretrain", "restorer"),
                              ("pretrain", "energy")]:
            arts[f"{target}-ts"] = Path(export_artifact(
                str(runs[stage]), target, "torchscript", root / "exports-ts", batch=BATCH,
                validate=False)["artifact"])
        _SHARED.update(runs=runs, artifacts=arts, root=root)
    return _SHARED
