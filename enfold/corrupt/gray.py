"""Grayscale (colorization): every channel becomes the luma."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from enfold.config import GrayConfig
from enfold.corrupt.context import CorruptionContext
from enfold.corrupt.registry import Corrupted, register
from enfold.errors import ConfigError

# ITU-R BT.601 luma weights, the usual RGB -> gray conversion.
LUMA = (0.299, 0.587, 0.114)


@dataclass
class Grayscale:
    """Replace the colour image by its luma in all three channels."""

    name: str = "gray"

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        luma = torch.tensor(LUMA, dtype=img.dtype).view(3, 1, 1)
        gray = (img * luma).sum(0, keepdim=True).expand_as(img).clone()
        return gray, img, torch.ones(1, *img.shape[1:])


@register("gray")
def build(cfg: GrayConfig, context: CorruptionContext) -> Grayscale:
    if context.in_chans != 3:
        raise ConfigError(
            f"the gray (colorization) task needs 3-channel images, the model has "
            f"{context.in_chans}; set model.in_chans=3 or remove 'gray' from corrupt.tasks"
        )
    return Grayscale()
