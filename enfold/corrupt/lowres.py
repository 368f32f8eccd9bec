"""Low resolution (super-resolution): area downsampling, then bilinear upsampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from enfold.config import SRConfig
from enfold.corrupt.context import CorruptionContext
from enfold.corrupt.registry import Corrupted, register
from enfold.errors import ConfigError


@dataclass
class LowResolution:
    """Lose detail by shrinking the image ``factor`` times and blowing it back up."""

    factor: int
    name: str = "sr"

    def __post_init__(self) -> None:
        if self.factor < 2:
            raise ConfigError(f"corrupt.sr.factor must be at least 2, got {self.factor}")

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        _, h, w = img.shape
        small = F.interpolate(img[None], size=(max(1, h // self.factor), max(1, w // self.factor)),
                              mode="area")
        up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
        return up, img, torch.ones(1, h, w)


@register("sr")
def build(cfg: SRConfig, context: CorruptionContext) -> LowResolution:
    return LowResolution(cfg.factor)
