"""Reconstruction pictures from a checkpoint, outside training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from enfold.checkpoint.load import load_energy_model
from enfold.corrupt import CorruptionContext, build_one
from enfold.data import build_source
from enfold.pipeline.restoration_eval import evaluate_restoration


def visualize_checkpoint(checkpoint: str | Path, task: str, out: str | Path, num: int = 8,
                         steps: int | None = None, seed: int = 1234) -> dict[str, float]:
    """Write a PNG grid for ``task`` on ``num`` held-out images; return the task's PSNRs."""
    model, cfg = load_energy_model(checkpoint)
    corruption = build_one(task, getattr(cfg.corrupt, task, None),
                           CorruptionContext.from_config(cfg))
    heldout = build_source(cfg.data.source, "heldout", cfg.model, cfg.data, heldout_count=num)
    eval_cfg = replace(cfg.eval, num_images=num, grid_images=num, batch_size=num, seed=seed)
    return evaluate_restoration(model, {task: corruption}, heldout, cfg.data.mean, cfg.data.std,
                                eval_cfg, torch.device("cpu"), {task: Path(out)}, steps=steps)
