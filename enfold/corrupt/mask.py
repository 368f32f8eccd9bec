"""Masked patches (masked image modeling): a fraction of patches is replaced by a fill."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from enfold.config import MaskConfig
from enfold.corrupt.context import CorruptionContext
from enfold.corrupt.registry import Corrupted, patch_grid, patch_mask_to_pixels, register
from enfold.errors import ConfigError


@dataclass
class MaskPatches:
    """Hide ``ratio`` of the ``patch`` x ``patch`` patches behind zeros, noise or the data mean."""

    ratio: float
    patch: int
    fill: str
    mean: list[float]
    name: str = "mask"

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"corrupt.mask.ratio must be in (0, 1), got {self.ratio}")

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        c, h, w = img.shape
        rows, cols = patch_grid(img, self.patch)
        n = rows * cols
        n_masked = max(1, round(self.ratio * n))
        order = torch.randperm(n, generator=generator)  # vectorised choice, as in MAE
        flags = torch.zeros(n, dtype=torch.bool)
        flags[order[:n_masked]] = True
        weight = patch_mask_to_pixels(flags, rows, cols, self.patch)  # (1, H, W)
        if self.fill == "zero":
            fill = torch.zeros_like(img)
        elif self.fill == "noise":
            fill = torch.rand(img.shape, generator=generator)
        else:  # "mean": the normalisation mean, i.e. zero after normalisation
            fill = torch.tensor(self.mean[:c], dtype=img.dtype).view(c, 1, 1).expand_as(img)
        corrupted = torch.where(weight.bool(), fill, img)
        return corrupted, img, weight


@register("mask")
def build(cfg: MaskConfig, context: CorruptionContext) -> MaskPatches:
    patch = cfg.patch_size or context.patch_size
    return MaskPatches(cfg.ratio, patch, cfg.fill, list(context.mean))
