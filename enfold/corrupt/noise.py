"""Additive Gaussian noise (denoising)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def estimate_sigma(img: torch.Tensor | np.ndarray) -> float:
    """The Gaussian noise level of ``(C, H, W)`` pixels in [0, 1] (pixel units), by
    scikit-image's wavelet estimate (``skimage.restoration.estimate_sigma``), averaged over
    channels: what a noise-level restorer is given when its caller does not know sigma."""
    from skimage.restoration import estimate_sigma as wavelet_sigma

    arr = img.detach().float().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(
        img, dtype=np.float32)
    return float(np.mean([wavelet_sigma(ch) for ch in arr]))
