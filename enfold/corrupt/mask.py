"""Masked patches (masked image modeling): a fraction of patches is replaced by a fill; with
``corrupt.mask.freeform`` some samples get free-form holes instead (:mod:`.freeform`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from enfold.config import MaskConfig
from enfold.corrupt.context import CorruptionContext
from enfold.corrupt.freeform import FreeFormHoles, check_hole_ratio, fill_holes
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
        check_hole_ratio(self.ratio)

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        _, h, w = img.shape
        rows, cols = patch_grid(img, self.patch)
        n = rows * cols
        n_masked = max(1, round(self.ratio * n))
        order = torch.randperm(n, generator=generator)  # vectorised choice, as in MAE
        flags = torch.zeros(n, dtype=torch.bool)
        flags[order[:n_masked]] = True
        weight = patch_mask_to_pixels(flags, rows, cols, self.patch)  # (1, H, W)
        return fill_holes(img, weight, self.fill, self.mean, generator), img, weight


@dataclass
class PatchOrFreeForm:
    """Free-form holes with probability ``freeform``, patch holes otherwise (per sample)."""

    patches: MaskPatches
    freeform_holes: FreeFormHoles
    freeform: float
    name: str = "mask"

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        if torch.rand((), generator=generator).item() < self.freeform:
            return self.freeform_holes(img, generator)
        return self.patches(img, generator)


@register("mask")
def build(cfg: MaskConfig, context: CorruptionContext) -> MaskPatches | PatchOrFreeForm:
    patch = cfg.patch_size or context.patch_size
    patches = MaskPatches(cfg.ratio, patch, cfg.fill, list(context.mean))
    if not 0.0 <= cfg.freeform <= 1.0:
        raise ConfigError(f"corrupt.mask.freeform is a probability in [0, 1], got {cfg.freeform}")
    if cfg.freeform == 0:  # the patch holes alone, with the same random stream as before
        return patches
    return PatchOrFreeForm(patches, FreeFormHoles(cfg.ratio, cfg.fill, list(context.mean)),
                           cfg.freeform)
