"""Restoration quality in one number: PSNR on a weighted region, read by training's held-out
evaluation, the export's validation and the runtime's ``--simulate`` alike."""

from __future__ import annotations

import torch


def region_psnr(image: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) on the weighted region; pixels in [0, 1]. ``(B,C,H,W) -> (B,)``."""
    err = (image.clamp(0, 1) - clean.clamp(0, 1)).pow(2)  # (B, C, H, W)
    w = weight.expand_as(err)
    mse = (err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-12)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))
