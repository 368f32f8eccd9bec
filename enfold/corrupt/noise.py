"""Additive Gaussian noise (denoising)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from enfold.config import NoiseConfig
from enfold.corrupt.context import CorruptionContext
from enfold.corrupt.registry import Corrupted, register
from enfold.errors import ConfigError


@dataclass
class GaussianNoise:
    """Add N(0, sigma^2) noise; sigma is fixed or drawn uniformly from [sigma, sigma_max]."""

    sigma: float
    sigma_max: float | None = None
    name: str = "noise"

    def __post_init__(self) -> None:
        if self.sigma <= 0 or (self.sigma_max is not None and self.sigma_max < self.sigma):
            raise ConfigError(
                f"corrupt.noise needs 0 < sigma <= sigma_max, got {self.sigma}, {self.sigma_max}"
            )

    def __call__(self, img: torch.Tensor, generator: torch.Generator) -> Corrupted:
        sigma = self.sigma
        if self.sigma_max is not None:
            sigma += (self.sigma_max - self.sigma) * torch.rand((), generator=generator).item()
        # Not clamped: clipping would make the noise non-Gaussian and biased near 0 and 1.
        noisy = img + sigma * torch.randn(img.shape, generator=generator)
        return noisy, img, torch.ones(1, *img.shape[1:])


@register("noise")
def build(cfg: NoiseConfig, context: CorruptionContext) -> GaussianNoise:
    return GaussianNoise(cfg.sigma, cfg.sigma_max)
