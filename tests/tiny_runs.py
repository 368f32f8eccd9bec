"""Tiny pretrain and finetune runs, trained in-process, for the ecosystem tests (OIP, Triton
repository, timm weights): seconds on 2 CPU cores, real checkpoints and metrics."""

from __future__ import annotations

from pathlib import Path

from conftest import DIGITS_TINY, ROOT, TINY

FINETUNE_TINY = ROOT / "configs" / "finetune" / "digits-tiny.yaml"


def train_tiny(root: Path, steps: int = 10) -> dict[str, Path]:
    """``{"pretrain": ckpt, "finetune": ckpt}`` of a 1-block, 8x8 digits model."""
    from enfold.config import load_config
    from enfold.pipeline.finetune import run_finetune
    from enfold.pipeline.pretrain import run_pretrain

    extra = [*TINY, "train.compile=false", f"train.max_steps={steps}", f"eval.every={steps}"]
    pre = run_pretrain(load_config(DIGITS_TINY, extra), root / "pre")
    ft = run_finetune(load_config(FINETUNE_TINY, extra), root / "ft", pretrained=pre)
    return {"pretrain": Path(pre), "finetune": Path(ft)}
