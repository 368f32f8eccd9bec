"""The tiny pretrain and finetune runs and their exports, made once per test session and shared
by every test that needs a trained model but not a good one (export, serving, sidecars, Open
Inference Protocol, Triton repository, timm weights, fuzzing, hostile inputs): real checkpoints,
metrics and artifacts in seconds on 2 CPU cores.

Fixtures (tests/conftest.py): ``tiny_runs`` (the two checkpoints) and ``tiny_exports``
(:func:`shared_tiny`). The runs are shared: a test that writes into a run works on a copy
(:func:`copy_run`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from conftest import DIGITS_TINY, ROOT, TINY, train

FINETUNE_TINY = ROOT / "configs" / "finetune" / "digits-tiny.yaml"
BATCH = "1:4:16"  # the exports' batch range (max_batch_size 16 in Triton)
TINY_STEPS = 10  # enough for an evaluation at the end of each stage; a step is milliseconds
_RUNS: dict[str, Path] = {}
_SHARED: dict[str, Any] = {}


def train_tiny(root: Path, steps: int = TINY_STEPS) -> dict[str, Path]:
    """``{"pretrain": ckpt, "finetune": ckpt}`` of a 1-block, 8x8 digits model trained for
    ``steps`` steps each, evaluated at the end. Tests that can share a run use the session's
    (the ``tiny_runs`` fixture) instead of training their own."""
    extra = [*TINY, f"train.max_steps={steps}", f"eval.every={steps}"]
    pre = train("pretrain", DIGITS_TINY, root / "pre", extra)
    return {"pretrain": pre, "finetune": train("finetune", FINETUNE_TINY, root / "ft", extra,
                                               pretrained=pre)}


def session_tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """The session's :func:`train_tiny` runs, trained on first use."""
    if not _RUNS:
        _RUNS.update(train_tiny(tmp_path_factory.mktemp("tiny-runs")))
    return dict(_RUNS)


def copy_run(checkpoint: Path, dest: Path) -> Path:
    """A copy of the run folder holding ``checkpoint`` in ``dest``: its checkpoint there."""
    shutil.copytree(Path(checkpoint).parent, dest)
    return dest / Path(checkpoint).name


def shared_tiny(tmp_path_factory) -> dict[str, Any]:
    """The session's tiny runs plus unvalidated exports, made on first use and shared by later
    tests: ``{"runs": {...}, "artifacts": {...}, "root": folder}`` with ONNX classifier and
    encoder (``"classifier"``, ``"encoder"``) and TorchScript classifier, restorer and energy
    (``"classifier-ts"`` ...), all for batches 1 to 16 (:data:`BATCH`)."""
    if not _SHARED:
        from enfold.export.export import export_artifact

        runs = session_tiny_runs(tmp_path_factory)
        root = tmp_path_factory.mktemp("tiny-shared")
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
