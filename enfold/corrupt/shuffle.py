"""Shuffled patches (patch sorting): a fraction of patches swap places."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from enfold.config import ShuffleConfig
from enfold.corrupt.context import CorruptionContext
from enfold.corrupt.registry import Corrupted, patch_grid, patch_mask_to_pixels, register
from enfold.errors import ConfigError


@dataclass
class ShufflePatches:
    """Move ``fraction`` of the patches; every chosen patch lands somewhere else (a cycle)."""

    fraction: float
    patch: int
    name: str = "shuffle"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"corrupt.shuffle.fraction must be in (0, 1], got {self.fraction}")

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        c, h, w = img.shape
        rows, cols = patch_grid(img, self.patch)
        p = self.patch
        n = rows * cols
        if n < 2:
            raise ConfigError(f"shuffle needs at least 2 patches, the image has {n}; "
                              "use a smaller corrupt.shuffle.patch_size")
        k = max(2, round(self.fraction * n))
        chosen = torch.randperm(n, generator=generator)[:k]
        source = torch.arange(n)
        # A cyclic shift of a random ordering is a derangement: no chosen patch stays put.
        source[chosen] = chosen.roll(1)
        patches = img.reshape(c, rows, p, cols, p).permute(1, 3, 0, 2, 4).reshape(n, c, p, p)
        moved = patches[source].reshape(rows, cols, c, p, p).permute(2, 0, 3, 1, 4)
        corrupted = moved.reshape(c, h, w)
        flags = torch.zeros(n, dtype=torch.bool)
        flags[chosen] = True
        return corrupted, img, patch_mask_to_pixels(flags, rows, cols, p)


@register("shuffle")
def build(cfg: ShuffleConfig, context: CorruptionContext) -> ShufflePatches:
    return ShufflePatches(cfg.fraction, cfg.patch_size or context.patch_size)
