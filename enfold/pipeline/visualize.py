"""Reconstruction pictures from a checkpoint, outside training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from enfold.config import config_from_checkpoint
from enfold.corrupt import build_one
from enfold.data import build_source
from enfold.errors import EnfoldError
from enfold.model import EnergyViT, build_energy_model
from enfold.pipeline.checkpoint import load_checkpoint
from enfold.pipeline.restoration_eval import evaluate_restoration


def load_energy_model(checkpoint: str | Path) -> tuple[EnergyViT, object]:
    """Rebuild the energy ViT and its config from a pretrain checkpoint (eval mode, CPU)."""
    state = load_checkpoint(checkpoint)
    if state.get("stage") != "pretrain":
        raise EnfoldError(f"{checkpoint} is a '{state.get('stage')}' checkpoint; "
                          "pass a pretrain checkpoint")
    cfg = config_from_checkpoint(state["config"])
    model = build_energy_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def visualize_checkpoint(checkpoint: str | Path, task: str, out: str | Path, num: int = 8,
                         steps: int | None = None, seed: int = 1234) -> dict[str, float]:
    """Write a PNG grid for ``task`` on ``num`` held-out images; return the task's PSNRs."""
    model, cfg = load_energy_model(checkpoint)
    context = {"patch_size": cfg.model.patch_size, "in_chans": cfg.model.in_chans,
               "mean": cfg.data.mean}
    corruption = build_one(task, getattr(cfg.corrupt, task, None), context)
    heldout = build_source(cfg.data.source, "heldout", cfg.model, cfg.data, heldout_count=num)
    eval_cfg = replace(cfg.eval, num_images=num, grid_images=num, batch_size=num, seed=seed)
    return evaluate_restoration(model, {task: corruption}, heldout, cfg.data.mean, cfg.data.std,
                                eval_cfg, torch.device("cpu"), {task: Path(out)}, steps=steps)
